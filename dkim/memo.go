package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"io"
	"sync"
)

// memoSigner remembers the last signatures a deterministic key made, by
// digest. The messages of one multi-recipient transaction differ only in
// the trace fields prepended for each recipient (Received, X-KumoRef),
// which are not signed; signed within the same second (t=), their
// digests are equal, and the RSA operation — over a millisecond for a
// 2048-bit key, by far the largest cost of signing — is done once for all
// of them instead of once per recipient. This is sound only because
// RSASSA-PKCS1-v1_5 and Ed25519 signatures are deterministic: the same key
// and digest always give the same bytes, so a remembered signature is the
// one the key would make now.
type memoSigner struct {
	crypto.Signer
	mu   sync.Mutex
	ring [memoSize]memoEntry
	next int
}

// memoSize is small: hits come from messages signed moments apart.
const memoSize = 16

type memoEntry struct {
	hash   crypto.Hash
	digest string
	sig    []byte
}

// memoize wraps keys whose signatures are deterministic; others (a
// hardware signer, say, or an RSA key used with PSS) are returned as they
// are.
func memoize(key crypto.Signer) crypto.Signer {
	switch key.(type) {
	case *rsa.PrivateKey, ed25519.PrivateKey:
		return &memoSigner{Signer: key}
	}
	return key
}

func (m *memoSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, pss := opts.(*rsa.PSSOptions); pss {
		return m.Signer.Sign(rand, digest, opts) // randomized: never reuse
	}
	h := opts.HashFunc()
	m.mu.Lock()
	for _, e := range m.ring {
		if e.hash == h && e.digest == string(digest) && e.sig != nil {
			m.mu.Unlock()
			return append([]byte(nil), e.sig...), nil
		}
	}
	m.mu.Unlock()
	sig, err := m.Signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.ring[m.next] = memoEntry{hash: h, digest: string(digest), sig: append([]byte(nil), sig...)}
	m.next = (m.next + 1) % memoSize
	m.mu.Unlock()
	return sig, nil
}
