package dkim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// signerCase is one key/algorithm/canonicalization combination.
type signerCase struct {
	name     string
	key      string // testKey name
	selector string
	hc, bc   Canonicalization
}

func signerCases() []signerCase {
	return []signerCase{
		{name: "rsa1024 relaxed", key: "rsa1024", selector: "r1024"},
		{name: "rsa2048 relaxed", key: "rsa2048", selector: "r2048"},
		{name: "ed25519 relaxed", key: "ed25519", selector: "ed"},
		{name: "rsa2048 simple", key: "rsa2048", selector: "r2048", hc: Simple, bc: Simple},
		{name: "ed25519 simple/relaxed", key: "ed25519", selector: "ed", hc: Simple, bc: Relaxed},
		{name: "rsa1024 relaxed/simple", key: "rsa1024", selector: "r1024", hc: Relaxed, bc: Simple},
	}
}

// TestSignVerifyMatrix signs every message shape with every key type and
// canonicalization, then verifies with go-msgauth and dkimpy; a tampered
// body must fail both.
func TestSignVerifyMatrix(t *testing.T) {
	zone := dnsZone{}
	type signed struct {
		label     string
		msg       []byte // signature + original, as the server would store it
		goMsg     []byte
		tampered  []byte
		goTampMsg []byte
	}
	var all []signed
	for _, sc := range signerCases() {
		key := testKey(t, sc.key)
		zone.add(t, sc.selector, "example.com", key)
		for _, overSign := range []bool{false, true} {
			s, err := NewSigner(Options{
				Domain: "example.com", Selector: sc.selector, Key: key,
				HeaderCanonicalization: sc.hc, BodyCanonicalization: sc.bc,
				OverSign: overSign, Expiration: time.Hour,
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, tm := range testMessages() {
				label := fmt.Sprintf("%s/oversign=%v/%s", sc.name, overSign, tm.name)
				orig := bytes.Clone(tm.msg)
				sig, err := s.Sign(tm.msg)
				if err != nil {
					t.Fatalf("%s: %v", label, err)
				}
				if !bytes.Equal(orig, tm.msg) {
					t.Fatalf("%s: Sign modified the message", label)
				}
				checkSignatureField(t, label, sig)
				full := append(bytes.Clone(sig), tm.msg...)
				tampered := tamperBody(t, full)
				goMsg, goTamp := full, tampered
				if tm.goNeedsSeparator {
					goMsg = append(bytes.Clone(full), "\r\n"...)
					goTamp = tampered // tampering added the separator
				}
				all = append(all, signed{label: label, msg: full, goMsg: goMsg, tampered: tampered, goTampMsg: goTamp})
			}
		}
	}

	for _, m := range all {
		res := goVerify(t, m.goMsg, zone)
		if len(res) != 1 || res[0] != nil {
			t.Errorf("%s: go-msgauth: %v\n%s", m.label, res, m.goMsg)
		}
		res = goVerify(t, m.goTampMsg, zone)
		if len(res) != 1 || res[0] == nil {
			t.Errorf("%s: go-msgauth accepted a tampered body", m.label)
		}
	}

	var batch [][]byte
	for _, m := range all {
		batch = append(batch, m.msg, m.tampered)
	}
	results := dkimpyVerify(t, zone, batch...)
	for i, m := range all {
		good, bad := results[2*i], results[2*i+1]
		if len(good) != 1 || !good[0].Pass {
			t.Errorf("%s: dkimpy: %+v\n%s", m.label, good, m.msg)
		}
		if len(bad) != 1 || bad[0].Pass {
			t.Errorf("%s: dkimpy accepted a tampered body: %+v", m.label, bad)
		}
	}
}

var tagRE = regexp.MustCompile(`(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)`)

// sigTags parses the tags of a DKIM-Signature field.
func sigTags(t testing.TB, field []byte) map[string]string {
	t.Helper()
	s := string(field)
	name, value, ok := strings.Cut(s, ":")
	if !ok || name != "DKIM-Signature" {
		t.Fatalf("not a DKIM-Signature field: %q", s)
	}
	unfolded := strings.NewReplacer("\r\n", "", "\t", "", " ", "").Replace(value)
	tags := map[string]string{}
	for _, m := range tagRE.FindAllStringSubmatch(unfolded, -1) {
		tags[m[1]] = m[2]
	}
	return tags
}

func checkSignatureField(t testing.TB, label string, sig []byte) {
	t.Helper()
	if !bytes.HasPrefix(sig, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(sig, []byte("\r\n")) {
		t.Fatalf("%s: signature field is not a CRLF-terminated DKIM-Signature: %q", label, sig)
	}
	for _, line := range bytes.Split(bytes.TrimSuffix(sig, []byte("\r\n")), []byte("\r\n")) {
		if len(line) > 998 {
			t.Fatalf("%s: signature line of %d bytes", label, len(line))
		}
		if bytes.ContainsAny(line, "\r\n") {
			t.Fatalf("%s: bare CR or LF in signature", label)
		}
	}
}

func TestSignTags(t *testing.T) {
	key := testKey(t, "rsa1024")
	s, err := NewRSASigner(Options{
		Domain: "example.com", Selector: "sel", Key: key,
		Headers:    []string{"From", "Subject", "To"},
		Expiration: 90 * time.Second, Identifier: "@mail.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(crlf("From: a@example.com\nSubject: x\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	tags := sigTags(t, sig)
	want := map[string]string{"v": "1", "a": "rsa-sha256", "d": "example.com", "s": "sel", "c": "relaxed/relaxed", "h": "From:Subject:To", "i": "@mail.example.com"}
	for k, v := range want {
		if tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, tags[k], v)
		}
	}
	tt, _ := strconv.ParseInt(tags["t"], 10, 64)
	x, _ := strconv.ParseInt(tags["x"], 10, 64)
	if x-tt < 89 || x-tt > 91 {
		t.Errorf("x - t = %d, want 90 (t=%s x=%s)", x-tt, tags["t"], tags["x"])
	}
	if s.Algorithm() != RSASHA256 || s.Domain() != "example.com" || s.Selector() != "sel" {
		t.Errorf("accessors: %v %v %v", s.Algorithm(), s.Domain(), s.Selector())
	}
	if !strings.Contains(s.String(), "in-memory key") {
		t.Errorf("String() = %q", s.String())
	}

	ed, err := NewEd25519Signer(Options{Domain: "example.com", Selector: "ed", Key: testKey(t, "ed25519"), HeaderCanonicalization: "Simple"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err = ed.Sign(crlf("From: a@example.com\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	tags = sigTags(t, sig)
	if tags["a"] != "ed25519-sha256" || tags["c"] != "simple/relaxed" || tags["x"] != "" {
		t.Errorf("ed25519 tags: %v", tags)
	}
	if got, want := tags["h"], strings.Join(DefaultHeaders, ":"); got != want {
		t.Errorf("default h= %q, want %q", got, want)
	}
}

func TestOverSign(t *testing.T) {
	key := testKey(t, "ed25519")
	zone := dnsZone{}
	zone.add(t, "ed", "example.com", key)
	msg := crlf("From: a@example.com\nTo: one@example.net\nTo: two@example.net\nSubject: s\n\nbody\n")
	headers := []string{"From", "to", "Subject", "Reply-To", "subject"}

	plain, err := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key, Headers: headers})
	if err != nil {
		t.Fatal(err)
	}
	over, err := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key, Headers: headers, OverSign: true})
	if err != nil {
		t.Fatal(err)
	}
	plainSig, err := plain.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	overSig, err := over.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got := sigTags(t, plainSig)["h"]; got != "From:to:Subject:Reply-To:subject" {
		t.Errorf("plain h= %q", got)
	}
	// N+1 per distinct name: From 1+1, To 2+1, Subject 1+1, Reply-To 0+1.
	if got := sigTags(t, overSig)["h"]; got != "From:From:to:to:to:Subject:Subject:Reply-To" {
		t.Errorf("over-signed h= %q", got)
	}

	// Attacks: add a header field at the top of the signed message.
	attacks := map[string]string{
		"extra Subject":  "Subject: replaced\r\n",
		"extra To":       "To: victim@example.org\r\n",
		"extra From":     "From: evil@example.org\r\n",
		"added Reply-To": "Reply-To: evil@example.org\r\n",
	}
	for name, field := range attacks {
		for _, c := range []struct {
			label string
			sig   []byte
			// Plain signing lists Reply-To (absent) once and Subject twice
			// (as configured), so adding either is detected even without
			// over-signing; additional copies of From and To are not.
			wantFail bool
		}{
			{"plain", plainSig, name == "added Reply-To" || name == "extra Subject"},
			{"over-signed", overSig, true},
		} {
			m := append(append([]byte(field), c.sig...), msg...)
			res := goVerify(t, m, zone)
			if failed := res[0] != nil; failed != c.wantFail {
				t.Errorf("%s, %s: go-msgauth failed=%v (%v), want %v", name, c.label, failed, res[0], c.wantFail)
			}
		}
	}
}

func TestHeaderListLimits(t *testing.T) {
	key := testKey(t, "ed25519")
	zone := dnsZone{}
	zone.add(t, "ed", "example.com", key)
	var b strings.Builder
	b.WriteString("From: a@example.com\r\n")
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&b, "To: r%d@example.net\r\n", i)
	}
	b.WriteString("\r\nbody\r\n")
	msg := []byte(b.String())
	over, _ := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key, OverSign: true})
	if _, err := over.Sign(msg); err == nil || !strings.Contains(err.Error(), "line limit") {
		t.Errorf("300 To fields over-signed: %v", err)
	}
	plain, _ := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key})
	sig, err := plain.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if res := goVerify(t, append(sig, msg...), zone); res[0] != nil {
		t.Error(res[0])
	}
	long := make([]string, 0, 200)
	long = append(long, "From")
	for i := 0; i < 200; i++ {
		long = append(long, fmt.Sprintf("X-Long-Header-%d", i))
	}
	if _, err := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key, Headers: long}); err == nil {
		t.Error("over-long static header list accepted")
	}

	// DKIM-Signature in the list of the only signature: listed zero times.
	s, err := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key, Headers: []string{"From", "DKIM-Signature"}})
	if err != nil {
		t.Fatal(err)
	}
	m := crlf("From: a@example.com\n\nx\n")
	sig, err = s.Sign(m)
	if err != nil {
		t.Fatal(err)
	}
	if h := sigTags(t, sig)["h"]; h != "From" {
		t.Errorf("h= %q", h)
	}
	if res := goVerify(t, append(sig, m...), zone); res[0] != nil {
		t.Error(res[0])
	}
}

func TestSignRequiresFrom(t *testing.T) {
	s, err := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: testKey(t, "ed25519"), OverSign: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range [][]byte{
		crlf("To: b@example.net\nSubject: no from\n\nbody\n"),
		crlf("Subject: x\n\nFrom: in the body@example.com\n"),
		crlf("X-From: a@example.com\n\n"),
		nil,
	} {
		_, err := s.Sign(msg)
		if !errors.Is(err, ErrNoFromHeader) {
			t.Errorf("Sign(%q) = %v, want ErrNoFromHeader", msg, err)
		}
		var re *RejectError
		if !errors.As(err, &re) || re.Code != 552 || re.EnhancedCode != [3]int{5, 6, 0} {
			t.Errorf("error %v does not carry 552 5.6.0", err)
		}
	}
	if got := ErrNoFromHeader.Error(); got != "552 5.6.0 DKIM signing requires a From header, but it is missing from this message" {
		t.Errorf("ErrNoFromHeader = %q", got)
	}
}

func TestMulti(t *testing.T) {
	zone := dnsZone{}
	rsaKey, edKey, rsa1024 := testKey(t, "rsa2048"), testKey(t, "ed25519"), testKey(t, "rsa1024")
	zone.add(t, "r", "example.com", rsaKey)
	zone.add(t, "e", "example.com", edKey)
	zone.add(t, "esp", "esp.example", rsa1024)
	mk := func(o Options) *KeySigner {
		t.Helper()
		s, err := NewSigner(o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	m := Multi{
		mk(Options{Domain: "example.com", Selector: "r", Key: rsaKey, OverSign: true}),
		mk(Options{Domain: "example.com", Selector: "e", Key: edKey}),
		// This one signs the earlier DKIM-Signature fields too, which only
		// verifies if it saw them, as with sequential signing.
		mk(Options{Domain: "esp.example", Selector: "esp", Key: rsa1024, Headers: []string{"From", "DKIM-Signature", "Subject"}, OverSign: true}),
	}
	var msgs, tampered [][]byte
	for _, tm := range testMessages() {
		if tm.goNeedsSeparator {
			continue
		}
		orig := bytes.Clone(tm.msg)
		sigs, err := m.Sign(tm.msg)
		if err != nil {
			t.Fatalf("%s: %v", tm.name, err)
		}
		if !bytes.Equal(orig, tm.msg) {
			t.Fatalf("%s: message modified", tm.name)
		}
		if n := bytes.Count(append([]byte("\r\n"), sigs...), []byte("\r\nDKIM-Signature: ")); n != 3 {
			t.Fatalf("%s: %d signatures", tm.name, n)
		}
		first := sigs[:bytes.Index(sigs, []byte("\r\nDKIM-Signature: "))+2]
		if d := sigTags(t, first)["d"]; d != "esp.example" {
			t.Errorf("%s: first field has d=%s; the last signer's field should come first", tm.name, d)
		}
		full := append(sigs, tm.msg...)
		msgs = append(msgs, full)
		tampered = append(tampered, tamperBody(t, full))
		for i, err := range goVerify(t, full, zone) {
			if err != nil {
				t.Errorf("%s: go-msgauth signature %d: %v", tm.name, i, err)
			}
		}
		for i, err := range goVerify(t, tampered[len(tampered)-1], zone) {
			if err == nil {
				t.Errorf("%s: go-msgauth accepted tampered signature %d", tm.name, i)
			}
		}
	}
	res := dkimpyVerify(t, zone, append(msgs, tampered...)...)
	for i, r := range res {
		wantPass := i < len(msgs)
		if len(r) != 3 {
			t.Fatalf("message %d: dkimpy saw %d signatures", i, len(r))
		}
		for _, sig := range r {
			if sig.Pass != wantPass {
				t.Errorf("message %d (tampered=%v): dkimpy d=%s s=%s pass=%v %s", i, !wantPass, sig.D, sig.S, sig.Pass, sig.Error)
			}
		}
	}

	// Empty Multi signs nothing; a failing member fails the whole.
	if out, err := (Multi{}).Sign(crlf("From: a@example.com\n\n")); err != nil || len(out) != 0 {
		t.Errorf("empty Multi: %q, %v", out, err)
	}
	failing := Multi{m[0], signerFunc(func([]byte) ([]byte, error) { return nil, errors.New("boom") })}
	if _, err := failing.Sign(crlf("From: a@example.com\n\nx\n")); err == nil || !strings.Contains(err.Error(), "signature 2 of 2: boom") {
		t.Errorf("failing Multi: %v", err)
	}
	// A foreign Signer after a KeySigner gets the earlier signature prepended.
	var seen []byte
	spy := Multi{m[1], signerFunc(func(b []byte) ([]byte, error) { seen = b; return nil, nil })}
	if _, err := spy.Sign(crlf("From: a@example.com\n\nx\n")); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(seen, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(seen, crlf("From: a@example.com\n\nx\n")) {
		t.Errorf("foreign signer saw %q", seen)
	}
}

type signerFunc func([]byte) ([]byte, error)

func (f signerFunc) Sign(b []byte) ([]byte, error) { return f(b) }

func TestSignerOptionErrors(t *testing.T) {
	rsaKey, edKey := testKey(t, "rsa1024"), testKey(t, "ed25519")
	// Go refuses to generate keys under 1024 bits; checkKey only looks at
	// the modulus size.
	small := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: bigOfBits(512), E: 65537}}
	base := Options{Domain: "example.com", Selector: "s", Key: rsaKey}
	cases := []struct {
		name string
		mod  func(*Options)
		rsa  bool // use NewRSASigner rather than NewEd25519Signer
		want string
	}{
		{"no domain", func(o *Options) { o.Domain = "" }, true, "domain is required"},
		{"bad domain", func(o *Options) { o.Domain = "exa mple.com" }, true, `contains ' '`},
		{"bad selector", func(o *Options) { o.Selector = "s;x" }, true, `selector "s;x"`},
		{"no From", func(o *Options) { o.Headers = []string{"To", "Subject"} }, true, "must include From"},
		{"bad header", func(o *Options) { o.Headers = []string{"From", "Bad Name"} }, true, "invalid header name"},
		{"canon", func(o *Options) { o.BodyCanonicalization = "nowsp" }, true, "body canonicalization"},
		{"expiration", func(o *Options) { o.Expiration = -time.Second }, true, "negative expiration"},
		{"identifier", func(o *Options) { o.Identifier = "@other.example" }, true, "subdomain"},
		{"no key", func(o *Options) { o.Key = nil }, true, "no key"},
		{"two keys", func(o *Options) { o.KeyPEM = []byte("x") }, true, "more than one"},
		{"small RSA", func(o *Options) { o.Key = small }, true, "512 bits"},
		{"RSA for ed25519", func(o *Options) {}, false, "an RSA key cannot be used for ed25519-sha256"},
		{"ed25519 for RSA", func(o *Options) { o.Key = edKey }, true, "an Ed25519 key cannot be used for rsa-sha256"},
		{"bad PEM", func(o *Options) { o.Key = nil; o.KeyPEM = []byte("garbage") }, true, "no PEM private key block"},
		{"missing file", func(o *Options) { o.Key = nil; o.KeyFile = "/nonexistent/dir/s.key" }, true, "/nonexistent/dir/s.key"},
	}
	for _, c := range cases {
		o := base
		c.mod(&o)
		var err error
		if c.rsa {
			_, err = NewRSASigner(o)
		} else {
			_, err = NewEd25519Signer(o)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if _, err := checkKey("", &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: bigOfBits(4097)}}); err == nil || !strings.Contains(err.Error(), "4097 bits") {
		t.Errorf("4097-bit key: %v", err)
	}
	if _, err := checkKey("", &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: bigOfBits(4096)}}); err != nil {
		t.Errorf("4096-bit key: %v", err)
	}
	if _, err := checkKey("", ed25519.PrivateKey(make([]byte, 10))); err == nil {
		t.Error("short Ed25519 key accepted")
	}
}

func TestHeaderOnlyMessages(t *testing.T) {
	key := testKey(t, "ed25519")
	zone := dnsZone{}
	zone.add(t, "ed", "example.com", key)
	s, err := NewSigner(Options{Domain: "example.com", Selector: "ed", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	// Without trailing newline at all: signed as if "\r\n\r\n" followed.
	msg := []byte("From: a@example.com\r\nSubject: x")
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	full := append(sig, msg...)
	if res := goVerify(t, append(bytes.Clone(full), "\r\n\r\n"...), zone); res[0] != nil {
		t.Errorf("go-msgauth: %v", res[0])
	}
	r := dkimpyVerify(t, zone, full)
	if !r[0][0].Pass {
		t.Errorf("dkimpy: %+v", r[0])
	}
}

func TestFromDomain(t *testing.T) {
	cases := []struct {
		msg, want string
		err       error
	}{
		{"From: Alice <alice@Example.COM>\r\n\r\n", "example.com", nil},
		{"from: bob@sub.example.org.\r\nTo: x@y\r\n\r\n", "sub.example.org", nil},
		{"To: x@y\r\nFrom: \"Last, First\" <first@example.net>, other@else.example\r\n\r\n", "example.net", nil},
		{"From: =?x-unknown?q?Caf=E9?= <cafe@example.fr>\r\n\r\n", "example.fr", nil},
		{"From: Folded\r\n <folded@example.com>\r\n\r\n", "example.com", nil},
		{"From : spaced@example.com\r\n\r\n", "example.com", nil},
		{"From: Jörg <joerg@bücher.example>\r\n\r\n", "bücher.example", nil},
		{"Subject: none\r\n\r\nFrom: body@example.com\r\n", "", ErrNoFromHeader},
		{"From: undisclosed\r\n\r\n", "", ErrInvalidFromHeader},
		{"From: <a@../../etc>\r\n\r\n", "", ErrInvalidFromHeader},
		{"From: a@exa/mple.com\r\n\r\n", "", ErrInvalidFromHeader},
	}
	for _, c := range cases {
		got, err := FromDomain([]byte(c.msg))
		if got != c.want || !errors.Is(err, c.err) || (c.err == nil && err != nil) {
			t.Errorf("FromDomain(%q) = %q, %v; want %q, %v", c.msg, got, err, c.want, c.err)
		}
	}
}
