package dkim

import (
	"bytes"
	"crypto"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// Test keys are generated once per test binary.
var (
	testKeysOnce sync.Once
	testKeys     map[string]crypto.Signer
	testKeysErr  error
)

func testKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	testKeysOnce.Do(func() {
		testKeys = map[string]crypto.Signer{}
		for name, o := range map[string]KeyOptions{
			"rsa1024": {Type: KeyTypeRSA, Bits: 1024},
			"rsa2048": {Type: KeyTypeRSA, Bits: 2048},
			"ed25519": {Type: KeyTypeEd25519},
		} {
			k, err := GenerateKey(o)
			if err != nil {
				testKeysErr = err
				return
			}
			testKeys[name] = k
		}
	})
	if testKeysErr != nil {
		t.Fatal(testKeysErr)
	}
	k, ok := testKeys[name]
	if !ok {
		t.Fatalf("no test key %q", name)
	}
	return k
}

// bigOfBits returns 2^(n-1), a number of n bits.
func bigOfBits(n int) *big.Int { return new(big.Int).Lsh(big.NewInt(1), uint(n-1)) }

// dnsZone maps DKIM record names to TXT values, standing in for DNS.
type dnsZone map[string]string

func (z dnsZone) add(t testing.TB, selector, domain string, key crypto.Signer) {
	t.Helper()
	v, err := TXTRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	z[RecordName(selector, domain)] = v
}

// lookupTXT serves the zone to go-msgauth, passing each record as the
// concatenation of its 255-byte strings, as a resolver would.
func (z dnsZone) lookupTXT(name string) ([]string, error) {
	v, ok := z[strings.TrimSuffix(strings.ToLower(name), ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return []string{strings.Join(SplitTXT(v), "")}, nil
}

// goVerify verifies every signature of msg with go-msgauth and returns
// the per-signature errors (nil = pass), in header order.
func goVerify(t testing.TB, msg []byte, zone dnsZone) []error {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: zone.lookupTXT})
	if err != nil {
		t.Fatalf("go-msgauth could not read the message: %v", err)
	}
	out := make([]error, len(vs))
	for i, v := range vs {
		out[i] = v.Err
	}
	return out
}

// dkimpyResult is one signature's result from testdata/dkimpy_verify.py.
type dkimpyResult struct {
	D     string `json:"d"`
	S     string `json:"s"`
	Pass  bool   `json:"pass"`
	Error string `json:"error"`
}

const dkimpyPython = "/usr/bin/python3"

var (
	dkimpyOnce  sync.Once
	dkimpyError string
)

// requireDkimpy skips the test when dkimpy is not usable, unless
// MTAKIT_REQUIRE_DKIMPY=1, in which case it fails.
func requireDkimpy(t testing.TB) {
	t.Helper()
	dkimpyOnce.Do(func() {
		out, err := exec.Command(dkimpyPython, "-I", "-c", "import dkim, nacl, dns.resolver").CombinedOutput()
		if err != nil {
			dkimpyError = fmt.Sprintf("%s cannot import dkimpy and its Ed25519/DNS dependencies (%v: %s); install the Debian packages python3-dkim (which pulls in python3-nacl and python3-dnspython)",
				dkimpyPython, err, strings.TrimSpace(string(out)))
		}
	})
	if dkimpyError == "" {
		return
	}
	if os.Getenv("MTAKIT_REQUIRE_DKIMPY") == "1" {
		t.Fatalf("MTAKIT_REQUIRE_DKIMPY=1 but %s", dkimpyError)
	}
	t.Skip(dkimpyError)
}

// dkimpyVerify runs dkimpy over several messages in one Python process and
// returns the per-signature results of each message.
func dkimpyVerify(t testing.TB, zone dnsZone, msgs ...[]byte) [][]dkimpyResult {
	t.Helper()
	requireDkimpy(t)
	dir := t.TempDir()
	zoneJSON, err := json.Marshal(zone)
	if err != nil {
		t.Fatal(err)
	}
	zonePath := filepath.Join(dir, "dns.json")
	if err := os.WriteFile(zonePath, zoneJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-I", filepath.Join("testdata", "dkimpy_verify.py"), zonePath}
	for i, m := range msgs {
		p := filepath.Join(dir, fmt.Sprintf("msg%03d.eml", i))
		if err := os.WriteFile(p, m, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	cmd := exec.Command(dkimpyPython, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy_verify.py: %v\n%s", err, stderr.String())
	}
	var res []struct {
		File       string         `json:"file"`
		Signatures []dkimpyResult `json:"signatures"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("dkimpy_verify.py output: %v\n%s", err, out)
	}
	if len(res) != len(msgs) {
		t.Fatalf("dkimpy_verify.py returned %d results for %d messages", len(res), len(msgs))
	}
	all := make([][]dkimpyResult, len(res))
	for i, r := range res {
		all[i] = r.Signatures
	}
	return all
}

// crlf converts "\n" line ends to CRLF.
func crlf(s string) []byte {
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// testMessage is one message shape for the signing matrix.
type testMessage struct {
	name string
	msg  []byte
	// goNeedsSeparator: go-msgauth's verifier cannot read a message without
	// the empty line after the header, so it checks msg+CRLF (the same
	// message with an empty body); dkimpy checks the exact bytes.
	goNeedsSeparator bool
}

func testMessages() []testMessage {
	var many strings.Builder
	many.WriteString("Received: from a.example (a.example [192.0.2.1]) by mx.example; Tue, 1 Jul 2025 10:00:00 +0000\n")
	many.WriteString("Received: from b.example by a.example; Tue, 1 Jul 2025 09:59:00 +0000\n")
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&many, "X-Header-%02d: value %d\n", i, i)
	}
	many.WriteString("From: Many <many@example.com>\nTo: a@example.net, b@example.net\nSubject: many headers\nDate: Tue, 1 Jul 2025 10:00:00 +0000\nMessage-ID: <many@example.com>\n\nbody\n")

	long := strings.Repeat("0123456789", 99) // 990 bytes
	veryLong := strings.Repeat("abcdefghij", 300)

	return []testMessage{
		{name: "simple", msg: crlf("From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hello\nDate: Tue, 1 Jul 2025 10:00:00 +0000\nMessage-ID: <1@example.com>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nHello Bob.\n")},
		{name: "8bit", msg: crlf("From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>\nTo: Zoë <zoe@example.net>\nSubject: Grüße aus Köln – 日本語\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße, 日本語テキスト, emoji 😀.\nLatin-1 byte: \xe9 and NUL-free binary \x80\xff\n")},
		{name: "long lines", msg: crlf("From: a@example.com\nTo: b@example.net\nSubject: " + long[:200] + "\nReferences: <" + long[:300] + "@example.com>\n\n" + long + "\n" + veryLong + "\nshort\n")},
		{name: "many headers", msg: crlf(many.String())},
		{name: "empty body", msg: crlf("From: a@example.com\nTo: b@example.net\nSubject: empty\n\n")},
		{name: "header only, no separator", msg: crlf("From: a@example.com\nTo: b@example.net\nSubject: no body\n"), goNeedsSeparator: true},
		{name: "folded headers", msg: crlf("From: \"A Person\"\n <a@example.com>\nTo: one@example.net,\n\ttwo@example.net,\n    three@example.net\nSubject: a subject\n  folded over\n\tthree lines   \nDate: Tue, 1 Jul 2025\n 10:00:00 +0000\n\nbody\n")},
		{name: "no trailing CRLF", msg: crlf("From: a@example.com\nSubject: no final newline\n\nline one\nline two without newline")},
		{name: "trailing empty lines and spaces", msg: crlf("From: a@example.com\nSubject: trailing\n\nline with trailing spaces   \n\t\nmiddle  \t with \t  runs\n\n\n\n")},
		{name: "duplicate headers", msg: crlf("From: a@example.com\nTo: first@example.net\nTo: second@example.net\nSubject: dup\nSubject: dup again\n\nbody\n")},
		{name: "header case", msg: crlf("FROM: a@example.com\nsubject: lower\nTO: upper@example.net\ndAtE: Tue, 1 Jul 2025 10:00:00 +0000\n\nbody\n")},
		{name: "body only CRLF", msg: crlf("From: a@example.com\nSubject: crlf\n\n\n")},
	}
}

// tamperBody changes the last letter of the body.
func tamperBody(t testing.TB, signed []byte) []byte {
	t.Helper()
	out := bytes.Clone(signed)
	sep := bytes.Index(out, []byte("\r\n\r\n"))
	if sep < 0 {
		// Header only: giving it a body changes the (empty) body hash.
		return append(out, "\r\nX"...)
	}
	for i := len(out) - 1; i > sep+4; i-- {
		c := out[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') {
			out[i] ^= 0x20 // flip letter case
			return out
		}
	}
	// No letter in the body: append one.
	return append(out, 'X')
}
