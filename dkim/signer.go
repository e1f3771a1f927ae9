package dkim

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// Algorithm is a DKIM signing algorithm (the a= tag).
type Algorithm string

// Supported algorithms.
const (
	RSASHA256     Algorithm = "rsa-sha256"     // RFC 6376
	Ed25519SHA256 Algorithm = "ed25519-sha256" // RFC 8463
)

// Canonicalization is a DKIM canonicalization algorithm for the header or
// the body (RFC 6376 section 3.4).
type Canonicalization string

// Canonicalization algorithms. The empty value means Relaxed.
const (
	Relaxed Canonicalization = "relaxed"
	Simple  Canonicalization = "simple"
)

// ParseCanonicalization accepts "relaxed" or "simple" in any letter case
// (KumoMTA spells them "Relaxed" and "Simple"); "" gives Relaxed.
func ParseCanonicalization(s string) (Canonicalization, error) {
	switch strings.ToLower(s) {
	case "", "relaxed":
		return Relaxed, nil
	case "simple":
		return Simple, nil
	}
	return "", fmt.Errorf("invalid canonicalization %q (want \"Relaxed\" or \"Simple\")", s)
}

// DefaultHeaders is the header list used when Options.Headers is nil and
// by dkim_data.toml when neither the block nor [base] lists headers. It is
// the list recommended by RFC 6376 section 5.4.1 (the one in KumoMTA's
// example dkim_data.toml), plus Sender, Message-ID, MIME-Version,
// Content-Type and Content-Transfer-Encoding, which receivers commonly
// expect to be covered, and List-Unsubscribe-Post, which RFC 8058 requires
// to be signed for one-click unsubscribe.
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"In-Reply-To", "References", "List-Id", "List-Help",
	"List-Unsubscribe", "List-Subscribe", "List-Post",
	"List-Owner", "List-Archive",
	"Sender", "Message-ID", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "List-Unsubscribe-Post",
}

// Options configures a KeySigner. The fields mirror the parameters of
// KumoMTA's kumo.dkim.rsa_sha256_signer and kumo.dkim.ed25519_signer.
//
// Exactly one of Key, KeyFile and KeyPEM must be set.
type Options struct {
	// Domain is the signing domain (d=). Required; ASCII (A-labels).
	Domain string
	// Selector is the key selector (s=). Required.
	Selector string

	// Headers lists the header field names to sign (h=); nil means
	// DefaultHeaders. It must include From. Without OverSign each name is
	// signed once, as listed (a name that is absent from the message then
	// asserts its absence; of repeated fields the last is signed).
	// DKIM-Signature is special: it is listed once per DKIM-Signature
	// field already in the message, so that earlier signatures are covered
	// without the new signature covering (and breaking) itself.
	Headers []string
	// OverSign signs each listed header N+1 times, where N is the number
	// of fields with that name in the message, so that neither another
	// copy of a present field nor a field that was absent can be added
	// without breaking the signature (KumoMTA's over_sign).
	OverSign bool

	// Header and body canonicalization; "" means Relaxed.
	HeaderCanonicalization Canonicalization
	BodyCanonicalization   Canonicalization

	// Expiration, if positive, sets x= to the signing time plus this
	// duration (KumoMTA's expiration, given in seconds there). It is
	// truncated to whole seconds.
	Expiration time.Duration

	// Identifier is the optional agent or user identifier (i=), e.g.
	// "@example.com" or "user@sub.example.com"; its domain must be Domain
	// or a subdomain of it.
	Identifier string

	// Key is a parsed private key: *rsa.PrivateKey or ed25519.PrivateKey.
	Key crypto.Signer
	// KeyFile is the path of a PEM private key file, loaded at
	// construction through Keys.
	KeyFile string
	// KeyPEM is a PEM private key (KumoMTA's key_data).
	KeyPEM []byte
	// Keys caches KeyFile; nil means DefaultKeyCache.
	Keys *KeyCache
}

// KeySigner signs messages with one key for one domain and selector. It
// implements Signer, is immutable and safe for concurrent use. The key is
// loaded and checked when the KeySigner is created; Sign performs no I/O.
type KeySigner struct {
	alg       Algorithm
	template  msgauth.SignOptions // HeaderKeys and Expiration set per message
	headers   []string            // configured names (deduplicated if overSign)
	nameIdx   []int               // headers[i] -> index of its distinct name
	distinct  map[string]int      // lower-case name -> distinct name index
	dkimIdx   int                 // distinct index of DKIM-Signature, or -1
	overSign  bool
	perMsg    bool // h= depends on the message
	expire    time.Duration
	keySource string // for messages: "key file PATH", "key data" or "in-memory key"
}

// NewRSASigner returns an RSA-SHA256 signer; the key must be an RSA key of
// 1024 to 4096 bits.
func NewRSASigner(o Options) (*KeySigner, error) { return newKeySigner(RSASHA256, o) }

// NewEd25519Signer returns an Ed25519-SHA256 signer (RFC 8463); the key
// must be an Ed25519 key.
func NewEd25519Signer(o Options) (*KeySigner, error) { return newKeySigner(Ed25519SHA256, o) }

// NewSigner returns a signer whose algorithm follows from the key type.
func NewSigner(o Options) (*KeySigner, error) { return newKeySigner("", o) }

func newKeySigner(alg Algorithm, o Options) (*KeySigner, error) {
	key, source, err := resolveKey(o)
	if err == nil {
		var s *KeySigner
		if s, err = buildKeySigner(alg, o, key, source); err == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("dkim: signer d=%s s=%s: %w", o.Domain, o.Selector, err)
}

// buildKeySigner validates o and returns the signer for key, which came
// from source (for error messages). The key fields of o are ignored.
func buildKeySigner(alg Algorithm, o Options, key crypto.Signer, source string) (*KeySigner, error) {
	if err := checkTagValue("domain", o.Domain); err != nil {
		return nil, err
	}
	if err := checkTagValue("selector", o.Selector); err != nil {
		return nil, err
	}
	hc, err := ParseCanonicalization(string(o.HeaderCanonicalization))
	if err != nil {
		return nil, fmt.Errorf("header canonicalization: %w", err)
	}
	bc, err := ParseCanonicalization(string(o.BodyCanonicalization))
	if err != nil {
		return nil, fmt.Errorf("body canonicalization: %w", err)
	}
	if o.Expiration < 0 {
		return nil, fmt.Errorf("negative expiration %v", o.Expiration)
	}
	if o.Expiration > 0 && o.Expiration < time.Second {
		return nil, fmt.Errorf("expiration %v is shorter than one second", o.Expiration)
	}
	if o.Identifier != "" {
		if err := checkIdentifier(o.Identifier, o.Domain); err != nil {
			return nil, err
		}
	}

	headers := o.Headers
	if headers == nil {
		headers = DefaultHeaders
	}
	s := &KeySigner{
		overSign: o.OverSign,
		expire:   o.Expiration.Truncate(time.Second),
		distinct: map[string]int{},
		dkimIdx:  -1,
	}
	hasFrom := false
	for _, h := range headers {
		if err := checkHeaderName(h); err != nil {
			return nil, err
		}
		l := strings.ToLower(h)
		hasFrom = hasFrom || l == "from"
		idx, dup := s.distinct[l]
		if !dup {
			idx = len(s.distinct)
			s.distinct[l] = idx
		}
		if dup && (o.OverSign || l == "dkim-signature") {
			continue // emitted once per occurrence in the message instead
		}
		if l == "dkim-signature" {
			s.dkimIdx = idx
		}
		s.headers = append(s.headers, h)
		s.nameIdx = append(s.nameIdx, idx)
	}
	s.perMsg = s.overSign || s.dkimIdx >= 0
	if !hasFrom {
		return nil, errors.New("the header list must include From (RFC 6376 section 5.4)")
	}

	if s.alg, err = checkKey(alg, key); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	s.keySource = source
	s.template = msgauth.SignOptions{
		Domain:                 o.Domain,
		Selector:               o.Selector,
		Identifier:             o.Identifier,
		Signer:                 memoize(key),
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: msgauth.Canonicalization(hc),
		BodyCanonicalization:   msgauth.Canonicalization(bc),
	}
	if !s.perMsg {
		s.template.HeaderKeys = s.headers
		if err := checkHLength(s.headers); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func resolveKey(o Options) (crypto.Signer, string, error) {
	n := 0
	for _, set := range []bool{o.Key != nil, o.KeyFile != "", len(o.KeyPEM) > 0} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return nil, "", errors.New("no key: set one of Key, KeyFile or KeyPEM")
	case n > 1:
		return nil, "", errors.New("more than one of Key, KeyFile and KeyPEM is set")
	case o.Key != nil:
		return o.Key, "in-memory key", nil
	case len(o.KeyPEM) > 0:
		k, err := ParsePrivateKey(o.KeyPEM)
		if err != nil {
			return nil, "", fmt.Errorf("key data: %w", err)
		}
		return k, "key data", nil
	}
	cache := o.Keys
	if cache == nil {
		cache = DefaultKeyCache
	}
	k, err := cache.Load(o.KeyFile)
	if err != nil {
		return nil, "", err
	}
	return k, "key file " + o.KeyFile, nil
}

func checkHeaderName(h string) error {
	if h == "" {
		return errors.New("empty header name in header list")
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("invalid header name %q in header list", h)
		}
	}
	return nil
}

func checkIdentifier(id, domain string) error {
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return fmt.Errorf("identifier %q has no '@'", id)
	}
	d := strings.ToLower(id[at+1:])
	sd := strings.ToLower(domain)
	if d != sd && !strings.HasSuffix(d, "."+sd) {
		return fmt.Errorf("identifier %q: its domain must be %s or a subdomain of it", id, domain)
	}
	if strings.ContainsAny(id, " \t\r\n;") {
		return fmt.Errorf("identifier %q contains white space or ';'", id)
	}
	return nil
}

// Algorithm returns the signing algorithm.
func (s *KeySigner) Algorithm() Algorithm { return s.alg }

// Domain returns the signing domain (d=).
func (s *KeySigner) Domain() string { return s.template.Domain }

// Selector returns the selector (s=).
func (s *KeySigner) Selector() string { return s.template.Selector }

// String describes the signer for logs, e.g. "rsa-sha256 d=example.com s=s1
// (key file /etc/dkim/example.com/s1.key)".
func (s *KeySigner) String() string {
	return fmt.Sprintf("%s d=%s s=%s (%s)", s.alg, s.template.Domain, s.template.Selector, s.keySource)
}

// Sign implements Signer. It returns one DKIM-Signature field, folded and
// CRLF-terminated. msg is read, never modified.
func (s *KeySigner) Sign(msg []byte) ([]byte, error) {
	return s.signWithPrefix(nil, msg)
}

// signWithPrefix signs the message formed by the header fields in prefix
// followed by msg, without concatenating them.
func (s *KeySigner) signWithPrefix(prefix, msg []byte) ([]byte, error) {
	var counts []int // per distinct name
	if s.perMsg {
		counts = make([]int, len(s.distinct))
	}
	count := func(name []byte) {
		if counts == nil || len(name) > 64 {
			return
		}
		var buf [64]byte
		l := buf[:len(name)]
		for i, c := range name {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			l[i] = c
		}
		if i, ok := s.distinct[string(l)]; ok {
			counts[i]++
		}
	}
	pre := scanHeader(prefix, count)
	hs := scanHeader(msg, count)
	if !hs.hasFrom && !pre.hasFrom {
		return nil, fmt.Errorf("dkim: signing d=%s s=%s: %w", s.template.Domain, s.template.Selector, ErrNoFromHeader)
	}

	opts := s.template
	if s.perMsg {
		opts.HeaderKeys = s.headerKeys(counts)
		if err := checkHLength(opts.HeaderKeys); err != nil {
			return nil, fmt.Errorf("dkim: signing d=%s s=%s: %w", s.template.Domain, s.template.Selector, err)
		}
	}
	if s.expire > 0 {
		opts.Expiration = time.Now().Add(s.expire)
	}

	// go-msgauth needs the empty line that ends the header. A message that
	// consists of header fields only has an empty body, so signing it as
	// if the empty line were there gives the signature every verifier
	// computes; the caller's bytes are not changed.
	var tail []byte
	if !hs.hasBody {
		if hs.endsInLF || len(msg) == 0 {
			tail = []byte("\r\n")
		} else {
			tail = []byte("\r\n\r\n")
		}
	}
	sig, err := signWith(&opts, prefix, msg, tail)
	if err != nil {
		return nil, fmt.Errorf("dkim: signing d=%s s=%s: %w", s.template.Domain, s.template.Selector, err)
	}
	return sig, nil
}

// maxHLength bounds the h= value: go-msgauth writes it on one line of the
// signature field, which must stay within SMTP's 998-byte line limit.
const maxHLength = 990

func checkHLength(keys []string) error {
	n := len(keys) - 1
	for _, k := range keys {
		n += len(k)
	}
	if n > maxHLength {
		return fmt.Errorf("the list of header fields to sign (h=) would be %d bytes, over the %d-byte line limit; sign fewer fields or disable over-signing for this message's repeated fields", n, maxHLength)
	}
	return nil
}

// headerKeys returns h= for a message with counts[i] fields of each
// distinct configured name.
//
// With over-signing each name appears counts+1 times. DKIM-Signature is
// special in both modes: it appears exactly as many times as the message
// already has such fields. Verifiers select the fields named in h= from
// the bottom up and count the signature being verified among the
// DKIM-Signature fields, so listing one more would select the signature
// itself, which was absent when it was computed, and it would never
// verify. Listing exactly N covers the N earlier signatures.
func (s *KeySigner) headerKeys(counts []int) []string {
	keys := make([]string, 0, len(s.headers)*2)
	for i, h := range s.headers {
		n := 1
		switch idx := s.nameIdx[i]; {
		case idx == s.dkimIdx:
			n = counts[idx]
		case s.overSign:
			n = counts[idx] + 1
		}
		for ; n > 0; n-- {
			keys = append(keys, h)
		}
	}
	return keys
}

// signWith runs go-msgauth's signer over the concatenation of parts and
// returns the DKIM-Signature field.
func signWith(opts *msgauth.SignOptions, parts ...[]byte) ([]byte, error) {
	ms, err := msgauth.NewSigner(opts)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		if len(p) == 0 {
			continue
		}
		if _, err := ms.Write(p); err != nil {
			// The signing goroutine stopped early; Close reports why.
			if cerr := ms.Close(); cerr != nil {
				return nil, cerr
			}
			return nil, err
		}
	}
	if err := ms.Close(); err != nil {
		return nil, err
	}
	return []byte(ms.Signature()), nil
}
