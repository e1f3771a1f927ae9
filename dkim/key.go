package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// RSA key sizes accepted for signing. RFC 8301 requires at least 1024
// bits; larger than 4096 bits makes the public key too long for common DNS
// provisioning and costs much CPU per message.
const (
	MinRSABits = 1024
	MaxRSABits = 4096
)

// ParsePrivateKey parses a PEM-encoded DKIM private key: an RSA key in
// PKCS#1 ("RSA PRIVATE KEY", what `openssl genrsa` wrote before OpenSSL
// 3.0 and what `openssl genrsa -traditional` writes) or PKCS#8 ("PRIVATE
// KEY", what OpenSSL 3 writes), or an Ed25519 key in PKCS#8 (what `openssl
// genpkey -algorithm ed25519` writes). Other PEM blocks before the key,
// such as parameters or comments, are skipped. Encrypted keys are refused.
//
// The key size is not checked here; the signer constructors do that.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block found (expected \"PRIVATE KEY\" or \"RSA PRIVATE KEY\")")
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, errors.New("encrypted PEM keys are not supported")
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS#1 RSA private key: %w", err)
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS#8 private key: %w", err)
			}
			switch k := k.(type) {
			case *rsa.PrivateKey:
				return k, nil
			case ed25519.PrivateKey:
				return k, nil
			default:
				return nil, fmt.Errorf("unsupported PKCS#8 key type %T (DKIM needs RSA or Ed25519)", k)
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PEM keys are not supported")
		case "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "DSA PRIVATE KEY":
			return nil, fmt.Errorf("unsupported key type %q (DKIM needs RSA or Ed25519)", block.Type)
		}
	}
}

// checkKey verifies that key suits alg and, for RSA, that its size is in
// [MinRSABits, MaxRSABits]. An empty alg accepts either type.
func checkKey(alg Algorithm, key crypto.Signer) (Algorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg != "" && alg != RSASHA256 {
			return "", fmt.Errorf("an RSA key cannot be used for %s", alg)
		}
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return "", fmt.Errorf("RSA key has %d bits; DKIM signing keys must have %d to %d bits", bits, MinRSABits, MaxRSABits)
		}
		return RSASHA256, nil
	case ed25519.PrivateKey:
		if alg != "" && alg != Ed25519SHA256 {
			return "", fmt.Errorf("an Ed25519 key cannot be used for %s", alg)
		}
		if len(k) != ed25519.PrivateKeySize {
			return "", fmt.Errorf("Ed25519 key has %d bytes, want %d", len(k), ed25519.PrivateKeySize)
		}
		return Ed25519SHA256, nil
	case nil:
		return "", errors.New("no key")
	default:
		return "", fmt.Errorf("unsupported key type %T (DKIM needs *rsa.PrivateKey or ed25519.PrivateKey)", key)
	}
}

// KeyCache loads private key files and keeps the parsed keys, so that a
// key is read and parsed once however many messages or signers use it.
// Each lookup compares the file's modification time and size with those
// of the cached copy (one stat call) and reloads the file when it changed,
// so replacing a key file (preferably by rename) takes effect without a
// restart. A KeyCache is safe for concurrent use; the zero value is not
// usable, call NewKeyCache.
type KeyCache struct {
	mu      sync.Mutex
	entries map[string]keyEntry
	loads   uint64
}

type keyEntry struct {
	id      uint64 // distinct for every load, so users can tell a reload
	modTime time.Time
	size    int64
	key     crypto.Signer
}

// NewKeyCache returns an empty cache.
func NewKeyCache() *KeyCache {
	return &KeyCache{entries: make(map[string]keyEntry)}
}

// DefaultKeyCache is the cache used when Options.Keys or LoadOptions.Keys
// is nil.
var DefaultKeyCache = NewKeyCache()

// Load returns the key in the PEM file at path, parsing it only if it is
// not cached or the file changed. Errors name the file.
func (c *KeyCache) Load(path string) (crypto.Signer, error) {
	key, _, err := c.load(path)
	return key, err
}

// load is Load that also returns the identity of the cached entry, which
// changes whenever the file is (re)loaded.
func (c *KeyCache) load(path string) (crypto.Signer, uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("dkim key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("dkim key file %s: not a regular file", path)
	}
	c.mu.Lock()
	e, ok := c.entries[path]
	c.mu.Unlock()
	if ok && e.modTime.Equal(fi.ModTime()) && e.size == fi.Size() {
		return e.key, e.id, nil
	}

	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("dkim key file: %w", err)
	}
	key, err := ParsePrivateKey(data)
	if err != nil {
		return nil, 0, fmt.Errorf("dkim key file %s: %w", path, err)
	}
	// Record the stat taken before reading: if the file changes while we
	// read it, the next lookup sees a different mtime/size and reloads.
	c.mu.Lock()
	c.loads++
	e = keyEntry{id: c.loads, modTime: fi.ModTime(), size: fi.Size(), key: key}
	c.entries[path] = e
	c.mu.Unlock()
	return key, e.id, nil
}

// Forget drops path from the cache, or every entry if path is "".
func (c *KeyCache) Forget(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if path == "" {
		clear(c.entries)
		return
	}
	delete(c.entries, path)
}
