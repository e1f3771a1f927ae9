package dkim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		typ    KeyType
		bits   int
		prefix string
	}{
		{KeyTypeRSA, 2048, "v=DKIM1; k=rsa; h=sha256; p=MIIBIjAN"},
		{KeyTypeRSA, 1024, "v=DKIM1; k=rsa; h=sha256; p=MIGfMA0G"},
		{KeyTypeEd25519, 0, "v=DKIM1; k=ed25519; h=sha256; p="},
	} {
		selector := "s" + string(c.typ)
		if c.bits != 0 {
			selector += "-" + string(rune('0'+c.bits/1024))
		}
		kf, err := WriteKeyFiles(KeygenOptions{Dir: dir, Domain: "Example.COM", Selector: selector, KeyOptions: KeyOptions{Type: c.typ, Bits: c.bits}})
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dir, "example.com", selector+".key"); kf.KeyPath != want {
			t.Errorf("KeyPath %q, want %q", kf.KeyPath, want)
		}
		if want := filepath.Join(dir, "example.com", selector+".pub"); kf.PubPath != want {
			t.Errorf("PubPath %q, want %q", kf.PubPath, want)
		}
		if kf.RecordName != selector+"._domainkey.example.com" {
			t.Errorf("RecordName %q", kf.RecordName)
		}
		if !strings.HasPrefix(kf.RecordValue, c.prefix) {
			t.Errorf("RecordValue %q, want prefix %q", kf.RecordValue, c.prefix)
		}
		for p, mode := range map[string]os.FileMode{kf.KeyPath: 0o600, kf.PubPath: 0o644} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), mode)
			}
		}
		// The key file loads and the .pub matches the record.
		key, err := NewKeyCache().Load(kf.KeyPath)
		if err != nil {
			t.Fatal(err)
		}
		if rec, _ := TXTRecord(key); rec != kf.RecordValue {
			t.Errorf("record of loaded key differs")
		}
		pubPEM, _ := os.ReadFile(kf.PubPath)
		block, _ := pem.Decode(pubPEM)
		if block == nil || block.Type != "PUBLIC KEY" {
			t.Fatalf("%s: not a PUBLIC KEY PEM", kf.PubPath)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if rec, _ := TXTRecord(pub); rec != kf.RecordValue {
			t.Errorf(".pub does not match the record")
		}
		if c.bits > 0 && key.(*rsa.PrivateKey).N.BitLen() != c.bits {
			t.Errorf("RSA key has %d bits", key.(*rsa.PrivateKey).N.BitLen())
		}
		if c.typ == KeyTypeRSA && key.(*rsa.PrivateKey).E != 65537 {
			t.Errorf("RSA exponent %d", key.(*rsa.PrivateKey).E)
		}
		line := kf.ZoneLine(3600)
		if !strings.HasPrefix(line, kf.RecordName+". 3600 IN TXT \"v=DKIM1; ") {
			t.Errorf("zone line %q", line)
		}
	}

	// Existing files are never replaced.
	_, err := WriteKeyFiles(KeygenOptions{Dir: dir, Domain: "example.com", Selector: "sed25519", KeyOptions: KeyOptions{Type: KeyTypeEd25519}})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("overwrite: %v", err)
	}
	for _, o := range []KeygenOptions{
		{Dir: dir, Domain: "../etc", Selector: "s"},
		{Dir: dir, Domain: "example.com", Selector: "a/b"},
		{Dir: dir, Domain: "", Selector: "s"},
		{Dir: dir, Domain: "example.com", Selector: "s", KeyOptions: KeyOptions{Type: KeyTypeEd25519, Bits: 2048}},
		{Dir: dir, Domain: "example.com", Selector: "s", KeyOptions: KeyOptions{Bits: 512}},
		{Dir: dir, Domain: "example.com", Selector: "s", KeyOptions: KeyOptions{Bits: 8192}},
		{Dir: dir, Domain: "example.com", Selector: "s", KeyOptions: KeyOptions{Type: "dsa"}},
	} {
		if _, err := WriteKeyFiles(o); err == nil {
			t.Errorf("WriteKeyFiles(%+v) succeeded", o)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "example.com", "s.key")); err == nil {
		t.Error("a failed WriteKeyFiles left a key behind")
	}
}

func TestSplitTXT(t *testing.T) {
	key := testKey(t, "rsa2048")
	rec, err := TXTRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	parts := SplitTXT(rec)
	if len(parts) < 2 {
		t.Fatalf("a 2048-bit record (%d bytes) should need several strings", len(rec))
	}
	for _, p := range parts {
		if len(p) > 255 || len(p) == 0 {
			t.Errorf("string of %d bytes", len(p))
		}
	}
	if strings.Join(parts, "") != rec {
		t.Error("parts do not join to the record")
	}
	if got := SplitTXT(strings.Repeat("a", 255)); len(got) != 1 {
		t.Errorf("255 bytes split into %d", len(got))
	}
	if got := SplitTXT(strings.Repeat("a", 256)); len(got) != 2 || len(got[1]) != 1 {
		t.Errorf("256 bytes split into %v", len(got))
	}
	if got := SplitTXT(""); len(got) != 1 || got[0] != "" {
		t.Errorf("empty: %q", got)
	}
	if got := ZoneTXT(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("ZoneTXT quoting: %s", got)
	}
	if z := ZoneTXT(rec); strings.Count(z, `"`) != 2*len(parts) {
		t.Errorf("ZoneTXT: %s", z)
	}
}

func TestParsePrivateKeyFormats(t *testing.T) {
	rsaKey := testKey(t, "rsa1024").(*rsa.PrivateKey)
	edKey := testKey(t, "ed25519").(ed25519.PrivateKey)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	pkcs8, _ := MarshalPrivateKeyPEM(rsaKey)
	ed8, _ := MarshalPrivateKeyPEM(edKey)
	params := []byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n")
	for name, data := range map[string][]byte{
		"PKCS#1":              pkcs1,
		"PKCS#8 RSA":          pkcs8,
		"PKCS#8 Ed25519":      ed8,
		"with leading params": append(bytes.Clone(params), pkcs1...),
		"with CRLF and text":  append([]byte("comment line\r\n"), bytes.ReplaceAll(pkcs8, []byte("\n"), []byte("\r\n"))...),
	} {
		if _, err := ParsePrivateKey(data); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, data := range map[string][]byte{
		"empty":     nil,
		"encrypted": []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
		"EC":        []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"),
		"public":    []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
		"broken":    []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
	} {
		if _, err := ParsePrivateKey(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOpenSSLKeys checks interoperability with the openssl CLI: keys made
// by KumoMTA's documented procedure load and sign verifiably, and openssl
// reads the keys WriteKeyFiles writes.
func TestOpenSSLKeys(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl CLI not installed")
	}
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	dir := filepath.Join(t.TempDir(), "example.com")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	zone := dnsZone{}
	type made struct {
		selector, path string
		alg            Algorithm
	}
	var keys []made

	// KumoMTA's documented commands (PKCS#8 with OpenSSL 3, PKCS#1 before).
	def := filepath.Join(dir, "default.key")
	run("genrsa", "-f4", "-out", def, "1024")
	run("rsa", "-in", def, "-outform", "PEM", "-pubout", "-out", filepath.Join(dir, "default.pub"))
	keys = append(keys, made{"default", def, RSASHA256})
	// Force the traditional PKCS#1 format where this openssl supports it.
	trad := filepath.Join(dir, "trad.key")
	if out, err := exec.Command(openssl, "genrsa", "-traditional", "-f4", "-out", trad, "2048").CombinedOutput(); err == nil {
		run("rsa", "-in", trad, "-pubout", "-out", filepath.Join(dir, "trad.pub"))
		data, _ := os.ReadFile(trad)
		if !bytes.Contains(data, []byte("BEGIN RSA PRIVATE KEY")) {
			t.Errorf("openssl -traditional did not write PKCS#1:\n%s", data)
		}
		keys = append(keys, made{"trad", trad, RSASHA256})
	} else {
		t.Logf("openssl genrsa -traditional unsupported (%v: %s); PKCS#1 covered by TestParsePrivateKeyFormats", err, out)
	}
	ed := filepath.Join(dir, "ed.key")
	if out, err := exec.Command(openssl, "genpkey", "-algorithm", "ed25519", "-out", ed).CombinedOutput(); err == nil {
		run("pkey", "-in", ed, "-pubout", "-out", filepath.Join(dir, "ed.pub"))
		keys = append(keys, made{"ed", ed, Ed25519SHA256})
	} else {
		t.Logf("openssl has no Ed25519 (%v: %s)", err, out)
	}

	msg := crlf("From: a@example.com\nTo: b@example.net\nSubject: openssl key\n\nbody\n")
	var signed [][]byte
	for _, k := range keys {
		// DNS record built from openssl's .pub, as an operator would.
		pubPEM, err := os.ReadFile(strings.TrimSuffix(k.path, ".key") + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(pubPEM)
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := TXTRecord(pub)
		if err != nil {
			t.Fatal(err)
		}
		if k.alg == RSASHA256 && rec != "v=DKIM1; k=rsa; h=sha256; p="+base64.StdEncoding.EncodeToString(block.Bytes) {
			t.Errorf("%s: record is not the .pub content", k.selector)
		}
		zone[RecordName(k.selector, "example.com")] = rec

		var s *KeySigner
		o := Options{Domain: "example.com", Selector: k.selector, KeyFile: k.path, Keys: NewKeyCache()}
		if k.alg == RSASHA256 {
			s, err = NewRSASigner(o)
		} else {
			s, err = NewEd25519Signer(o)
		}
		if err != nil {
			t.Fatalf("%s: %v", k.path, err)
		}
		sig, err := s.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		full := append(sig, msg...)
		if res := goVerify(t, full, zone); res[0] != nil {
			t.Errorf("%s: go-msgauth: %v", k.selector, res[0])
		}
		signed = append(signed, full)
	}
	for i, r := range dkimpyVerify(t, zone, signed...) {
		if !r[0].Pass {
			t.Errorf("%s: dkimpy: %s", keys[i].selector, r[0].Error)
		}
	}

	// openssl reads what WriteKeyFiles writes and derives the same .pub.
	for _, typ := range []KeyType{KeyTypeRSA, KeyTypeEd25519} {
		kf, err := WriteKeyFiles(KeygenOptions{Dir: t.TempDir(), Domain: "example.com", Selector: "s1", KeyOptions: KeyOptions{Type: typ, Bits: map[KeyType]int{KeyTypeRSA: 1024}[typ]}})
		if err != nil {
			t.Fatal(err)
		}
		out := run("pkey", "-in", kf.KeyPath, "-pubout")
		want, _ := os.ReadFile(kf.PubPath)
		if !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(want)) {
			t.Errorf("%s: openssl derives\n%s\nwe wrote\n%s", typ, out, want)
		}
		if typ == KeyTypeRSA {
			run("rsa", "-in", kf.KeyPath, "-check", "-noout")
		}
	}
}
