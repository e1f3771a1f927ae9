package dkim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"strings"
	"sync/atomic"
	"testing"
)

// countingSigner counts the signatures its key really computes.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, d, o)
}

func TestMemoSignerReusesOnlyEqualDigests(t *testing.T) {
	key := &countingSigner{Signer: testKey(t, "rsa2048")}
	m := &memoSigner{Signer: key}
	d1 := bytes.Repeat([]byte{1}, 32)
	d2 := bytes.Repeat([]byte{2}, 32)

	a, err := m.Sign(nil, d1, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	a[0] ^= 0xff // the caller owns what it gets: the remembered copy must not change
	b, err := m.Sign(nil, d1, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if key.n.Load() != 1 {
		t.Errorf("equal digests: %d signatures computed, want 1", key.n.Load())
	}
	fresh, _ := key.Signer.Sign(nil, d1, crypto.SHA256)
	if !bytes.Equal(b, fresh) {
		t.Error("remembered signature differs from the key's own")
	}
	if _, err := m.Sign(nil, d2, crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	if key.n.Load() != 2 {
		t.Errorf("a new digest: %d signatures computed, want 2", key.n.Load())
	}
	// PSS is randomized: never reused.
	pss := &rsa.PSSOptions{Hash: crypto.SHA256}
	for range 2 {
		if _, err := m.Sign(rand.Reader, d1, pss); err != nil {
			t.Fatal(err)
		}
	}
	if key.n.Load() != 4 {
		t.Errorf("PSS: %d signatures computed, want 4", key.n.Load())
	}
	// The ring forgets the oldest.
	for i := range memoSize {
		m.Sign(nil, bytes.Repeat([]byte{byte(10 + i)}, 32), crypto.SHA256)
	}
	before := key.n.Load()
	m.Sign(nil, d2, crypto.SHA256)
	if key.n.Load() != before+1 {
		t.Error("an entry older than the ring was reused")
	}
}

func TestMemoizeWrapsOnlyDeterministicKeys(t *testing.T) {
	for _, name := range []string{"rsa2048", "ed25519"} {
		if _, ok := memoize(testKey(t, name)).(*memoSigner); !ok {
			t.Errorf("%s key not memoized", name)
		}
	}
	other := &countingSigner{Signer: testKey(t, "rsa2048")}
	if memoize(other) != crypto.Signer(other) {
		t.Error("a signer of unknown kind was wrapped")
	}
}

// Copies of a message for different recipients, differing only in an
// unsigned Received field, get the same signature, and each verifies.
func TestSignRecipientCopiesShareSignature(t *testing.T) {
	for _, name := range []string{"rsa2048", "ed25519"} {
		t.Run(name, func(t *testing.T) {
			s, err := NewSigner(Options{Domain: "example.com", Selector: "s1", Key: testKey(t, name)})
			if err != nil {
				t.Fatal(err)
			}
			msg := benchMessage(2048)
			zone := dnsZone{}
			zone.add(t, "s1", "example.com", testKey(t, name))
			var sigs []string
			for _, rcpt := range []string{"a@example.net", "b@example.net", "c@example.net"} {
				copy := append([]byte("Received: by mx.example.com for <"+rcpt+">; Tue, 1 Jul 2025 10:00:01 +0000\r\n"), msg...)
				field, err := s.Sign(copy)
				if err != nil {
					t.Fatal(err)
				}
				sigs = append(sigs, string(field))
				if errs := goVerify(t, append(field, copy...), zone); len(errs) != 1 || errs[0] != nil {
					t.Fatalf("%s: verify: %v", rcpt, errs)
				}
			}
			if sigs[0] != sigs[1] && sigs[1] != sigs[2] { // t= may tick once between them
				t.Errorf("three copies signed in one go got three signatures:\n%s", strings.Join(sigs, "\n"))
			}
		})
	}
}
