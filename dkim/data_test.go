package dkim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// The KumoMTA example dkim_data.toml: a copy in testdata keeps the test
// hermetic; the project's shared fixture is checked too when present.
var kumoFixtures = []string{
	"testdata/kumomta_dkim_data.toml",
	"../../shared/fixtures/kumomta/dkim_data.toml",
}

func TestLoadKumoFixture(t *testing.T) {
	for _, path := range kumoFixtures {
		if _, err := os.Stat(path); err != nil && path != kumoFixtures[0] {
			t.Logf("skipping %s: %v", path, err)
			continue
		}
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) { testKumoFixture(t, path) })
	}
}

func testKumoFixture(t *testing.T, path string) {
	d, err := LoadData(path)
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	b := c.Base
	if b.VaultMount != "secret" || b.VaultPathPrefix != "dkim" || b.Selector != "dkim1024" || !b.OverSign ||
		!slices.Equal(b.AdditionalSignatures, []string{"MyESPName"}) || len(b.Headers) != 19 || b.Headers[18] != "List-Archive" {
		t.Errorf("base = %+v", b)
	}
	dc, ok := c.Domain["example.com"]
	if !ok || dc.Selector != "dkim1024" || dc.Algo != "sha256" || dc.Filename != "/full/path/to/key." ||
		!slices.Equal(dc.Headers, []string{"From", "To", "Subject", "Date", "Sender"}) {
		t.Errorf("domain example.com = %+v", dc)
	}
	sc, ok := c.Signature["MyESPName"]
	if !ok || sc.Domain != "myesp.com" || sc.Policy != PolicyAlways {
		t.Errorf("signature MyESPName = %+v", sc)
	}
	if d.KeyDir() != DefaultKeyDir || !slices.Equal(d.Files(), []string{path}) {
		t.Errorf("KeyDir %q Files %v", d.KeyDir(), d.Files())
	}
	if w := d.Warnings(); len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}

	// The fixture uses Vault: setting up a signer reports that clearly.
	_, err = d.SignerFor("example.com")
	if !errors.Is(err, ErrVaultUnsupported) || !strings.Contains(err.Error(), `vault_path "/full/path/to/key."`) {
		t.Errorf("SignerFor(example.com) = %v", err)
	}
	_, err = d.Sign(crlf("From: x@other.example\r\n\r\nbody\r\n"))
	if !errors.Is(err, ErrVaultUnsupported) || !strings.Contains(err.Error(), `[signature."MyESPName"]`) ||
		!strings.Contains(err.Error(), "dkim/myesp.com/dkim1024.key") {
		t.Errorf("Sign from other.example = %v", err)
	}
	err = d.Check()
	if !errors.Is(err, ErrVaultUnsupported) || !strings.Contains(err.Error(), path) {
		t.Errorf("Check() = %v", err)
	}
}

// keyTree writes key pairs under a temporary key directory.
type keyTree struct {
	t    *testing.T
	dir  string
	zone dnsZone
}

func newKeyTree(t *testing.T) *keyTree {
	return &keyTree{t: t, dir: t.TempDir(), zone: dnsZone{}}
}

func (k *keyTree) add(domain, selector string, typ KeyType) *KeyFiles {
	k.t.Helper()
	bits := 0
	if typ == KeyTypeRSA {
		bits = 1024
	}
	kf, err := WriteKeyFiles(KeygenOptions{Dir: k.dir, Domain: domain, Selector: selector, KeyOptions: KeyOptions{Type: typ, Bits: bits}})
	if err != nil {
		k.t.Fatal(err)
	}
	k.zone[kf.RecordName] = kf.RecordValue
	return kf
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// splitFields splits a block of DKIM-Signature fields into fields.
func splitFields(sigs []byte) [][]byte {
	var out [][]byte
	for len(sigs) > 0 {
		i := bytes.Index(sigs, []byte("\r\nDKIM-Signature: "))
		if i < 0 {
			return append(out, sigs)
		}
		out = append(out, sigs[:i+2])
		sigs = sigs[i+2:]
	}
	return out
}

// signedBy returns "d/s" of each signature in a signature block, top first.
func signedBy(t *testing.T, sigs []byte) []string {
	t.Helper()
	var out []string
	for _, f := range splitFields(sigs) {
		tags := sigTags(t, f)
		out = append(out, tags["d"]+"/"+tags["s"])
	}
	return out
}

func TestDataSelection(t *testing.T) {
	keys := newKeyTree(t)
	keys.add("example.com", "s1", KeyTypeRSA)
	keys.add("a.example.com", "w", KeyTypeEd25519)
	keys.add("x.y.example.com", "w", KeyTypeEd25519)
	explicit := keys.add("b.example.com", "explicit", KeyTypeRSA)
	keys.add("esp.example", "esp", KeyTypeEd25519)
	keys.add("fallback.example", "s1", KeyTypeRSA)

	conf := writeFile(t, t.TempDir(), "dkim_data.toml", fmt.Sprintf(`
[base]
selector = "s1"
additional_signatures = ["esp", "fallback"]
over_sign = true

[domain."example.com"]

[domain."*.example.com"]
selector = "w"
algo = "ed25519"

[domain."B.Example.com"]
selector = "explicit"
filename = %q
over_sign = false
headers = ["From", "Subject"]

[signature."esp"]
domain = "esp.example"
selector = "esp"
algo = "ed25519"
expiration = 3600
header_canonicalization = "Simple"

[signature."fallback"]
domain = "fallback.example"
policy = "OnlyIfMissingDomainBlock"

[signature."unused"]
domain = "unused.example"
`, explicit.KeyPath))
	d, err := Load(LoadOptions{KeyDir: keys.dir, Keys: NewKeyCache()}, conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	if w := d.Warnings(); len(w) != 2 || !strings.Contains(w[0], `[signature."unused"]`) || !strings.Contains(w[1], `[domain."*.example.com"] has no filename`) {
		t.Errorf("Warnings = %q", w)
	}

	cases := []struct {
		from  string
		match string
		want  []string // d/s, top (last applied) first
	}{
		{"user@example.com", "example.com", []string{"esp.example/esp", "example.com/s1"}},
		{"User <user@EXAMPLE.com>", "example.com", []string{"esp.example/esp", "example.com/s1"}},
		{"user@a.example.com", "*.example.com", []string{"esp.example/esp", "a.example.com/w"}},
		{"user@x.y.example.com", "*.example.com", []string{"esp.example/esp", "x.y.example.com/w"}},
		{"user@b.example.com", "b.example.com", []string{"esp.example/esp", "b.example.com/explicit"}},
		{"user@other.org", "", []string{"fallback.example/s1", "esp.example/esp"}},
		{"user@notexample.com", "", []string{"fallback.example/s1", "esp.example/esp"}},
	}
	var msgs [][]byte
	for _, c := range cases {
		domain := c.from[strings.LastIndexByte(c.from, '@')+1:]
		domain = strings.TrimSuffix(domain, ">")
		if got := d.MatchDomain(domain); got != c.match {
			t.Errorf("MatchDomain(%q) = %q, want %q", domain, got, c.match)
		}
		msg := crlf("From: " + c.from + "\nTo: rcpt@example.net\nSubject: selection\n\nbody for " + c.from + "\n")
		sigs, err := d.Sign(msg)
		if err != nil {
			t.Errorf("%s: %v", c.from, err)
			continue
		}
		if got := signedBy(t, sigs); !slices.Equal(got, c.want) {
			t.Errorf("%s: signed by %v, want %v", c.from, got, c.want)
		}
		full := append(sigs, msg...)
		msgs = append(msgs, full)
		for i, err := range goVerify(t, full, keys.zone) {
			if err != nil {
				t.Errorf("%s: go-msgauth signature %d: %v", c.from, i, err)
			}
		}
	}
	// Per-block settings reached the signatures.
	sigs, err := d.Sign(crlf("From: a@b.example.com\nSubject: s\n\nx\n"))
	if err != nil {
		t.Fatal(err)
	}
	fields := splitFields(sigs)
	espTags, domTags := sigTags(t, fields[0]), sigTags(t, fields[1])
	if espTags["c"] != "simple/relaxed" || espTags["x"] == "" || !strings.HasPrefix(espTags["h"], "From:From:Reply-To:Subject:Subject:") {
		t.Errorf("esp signature tags: %v", espTags)
	}
	if domTags["h"] != "From:Subject" || domTags["x"] != "" || domTags["a"] != "rsa-sha256" {
		t.Errorf("b.example.com signature tags: %v", domTags)
	}

	res := dkimpyVerify(t, keys.zone, msgs...)
	for i, r := range res {
		for _, s := range r {
			if !s.Pass {
				t.Errorf("%s: dkimpy d=%s s=%s: %s", cases[i].from, s.D, s.S, s.Error)
			}
		}
	}

	// A wildcard-matched domain without a key file fails, naming the file.
	_, err = d.Sign(crlf("From: a@nokey.example.com\n\nx\n"))
	wantPath := filepath.Join(keys.dir, "nokey.example.com", "w.key")
	if err == nil || !strings.Contains(err.Error(), wantPath) || !strings.Contains(err.Error(), `[domain."*.example.com"] for nokey.example.com`) {
		t.Errorf("missing wildcard key: %v", err)
	}
	// No From header: KumoMTA's 552 5.6.0.
	if _, err := d.Sign(crlf("Subject: x\n\nbody\n")); !errors.Is(err, ErrNoFromHeader) {
		t.Errorf("no From: %v", err)
	}
	if _, err := d.Sign(crlf("From: a@ex/ample.com\n\nbody\n")); !errors.Is(err, ErrInvalidFromHeader) {
		t.Errorf("bad From: %v", err)
	}
}

func TestWildcardDoesNotMatchParent(t *testing.T) {
	keys := newKeyTree(t)
	keys.add("sub.example.com", "s", KeyTypeEd25519)
	conf := writeFile(t, t.TempDir(), "d.toml", `
[domain."*.example.com"]
selector = "s"
algo = "ed25519"
[domain."*"]
selector = "catchall"
filename = "/nonexistent/catchall.key"
`)
	d, err := Load(LoadOptions{KeyDir: keys.dir}, conf)
	if err != nil {
		t.Fatal(err)
	}
	for domain, want := range map[string]string{
		"example.com":      "*",
		"sub.example.com":  "*.example.com",
		"a.b.example.com":  "*.example.com",
		"example.org":      "*",
		"badexample.com":   "*",
		"com":              "*",
		"Sub.Example.COM.": "*.example.com",
	} {
		if got := d.MatchDomain(domain); got != want {
			t.Errorf("MatchDomain(%q) = %q, want %q", domain, got, want)
		}
	}
	m, err := d.SignerFor("sub.example.com")
	if err != nil || len(m) != 1 {
		t.Fatalf("SignerFor(sub.example.com) = %v, %v", m, err)
	}
	if ks := m[0].(*KeySigner); ks.Domain() != "sub.example.com" || ks.Algorithm() != Ed25519SHA256 {
		t.Errorf("signer %v", ks)
	}
	if _, err := d.SignerFor("example.com"); err == nil || !strings.Contains(err.Error(), "/nonexistent/catchall.key") {
		t.Errorf("catch-all with missing key: %v", err)
	}
}

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, content string
		want          []string
	}{
		{"unknown.toml", `[base]
selector = "s"

[domain."example.com"]
selector = "a"
selectr = "typo"

[domain."other.com".nested]
x = 1

[bogus]
y = 2
`, []string{"unknown.toml:6: unknown key domain.\"example.com\".selectr", "unknown.toml:8: unknown key domain.\"other.com\".nested", "unknown.toml:11: unknown key bogus"}},
		{"enum.toml", `[base]
selector = "s"
policy = "Sometimes"
[domain."x.com"]
algo = "rsa"
header_canonicalization = "nowsp"
[signature."esp"]
domain = "esp.example"
policy = "Never"
`, []string{"enum.toml:3: base.policy: invalid value \"Sometimes\" (want \"Always\")", "enum.toml:5: domain.\"x.com\".algo: invalid value \"rsa\"", "enum.toml:6: domain.\"x.com\".header_canonicalization", "enum.toml:9: signature.esp.policy: invalid value \"Never\" (want \"Always\" or \"OnlyIfMissingDomainBlock\")"}},
		{"nodomain.toml", `[base]
selector = "s"

[signature."esp"]
selector = "x"
`, []string{"nodomain.toml:4: signature.esp: missing required key domain"}},
		{"type.toml", `[base]
selector = "s"
expiration = "1h"
`, []string{"type.toml:3: base.expiration: incompatible types"}},
		{"syntax.toml", `[base]
selector = "s
`, []string{"syntax.toml:2: "}},
		{"headers.toml", `[base]
headers = ["To", "Subject"]
`, []string{"headers.toml:2: base.headers: the header list must include From"}},
		{"pattern.toml", `[domain."a.*.example.com"]
selector = "s"
`, []string{`pattern.toml:1: domain."a.*.example.com": invalid domain pattern`}},
		{"missingsig.toml", `[base]
selector = "s"
additional_signatures = ["nope"]
`, []string{`base.additional_signatures lists "nope" but no [signature."nope"] block defines it`}},
		{"noselector.toml", `[domain."example.com"]
algo = "ed25519"
`, []string{`domain."example.com": no selector, and no default selector in base`}},
	}
	for _, c := range cases {
		p := writeFile(t, dir, c.name, c.content)
		_, err := LoadData(p)
		if err == nil {
			t.Errorf("%s: loaded without error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error\n%v\ndoes not contain %q", c.name, err, w)
			}
		}
		if !strings.Contains(err.Error(), p) && !strings.Contains(err.Error(), c.name) {
			t.Errorf("%s: error does not name the file: %v", c.name, err)
		}
	}
	if _, err := LoadData(filepath.Join(dir, "absent.toml")); err == nil || !strings.Contains(err.Error(), "absent.toml") {
		t.Errorf("absent file: %v", err)
	}
	if _, err := LoadData(writeFile(t, dir, "d.json", "{}")); err == nil || !strings.Contains(err.Error(), "only TOML") {
		t.Errorf("json file: %v", err)
	}
	if _, err := LoadData(); err == nil {
		t.Error("no files: no error")
	}
}

func TestMergeFiles(t *testing.T) {
	keys := newKeyTree(t)
	keys.add("example.com", "new", KeyTypeEd25519)
	dir := t.TempDir()
	a := writeFile(t, dir, "a.toml", `
[base]
selector = "old"
over_sign = true
headers = ["From", "To"]
expiration = 60

[domain."example.com"]
algo = "ed25519"
`)
	b := writeFile(t, dir, "b.toml", `
[base]
selector = "new"

[domain."example.com"]
over_sign = false
expiration = 0
`)
	d, err := Load(LoadOptions{KeyDir: keys.dir}, a, b)
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	if c.Base.Selector != "new" || !c.Base.OverSign || c.Base.Expiration != 60 || c.Domain["example.com"].Algo != "ed25519" {
		t.Errorf("merged config: %+v", c)
	}
	sigs, err := d.Sign(crlf("From: a@example.com\nTo: b@example.net\n\nx\n"))
	if err != nil {
		t.Fatal(err)
	}
	tags := sigTags(t, sigs)
	// over_sign = false in the domain block wins over base (KumoMTA's Lua
	// `or` would not let false override true; see the package doc), and
	// expiration = 0 there disables base's 60 s.
	if tags["s"] != "new" || tags["h"] != "From:To" || tags["x"] != "" {
		t.Errorf("tags %v", tags)
	}
}

func TestDataKeyReload(t *testing.T) {
	keys := newKeyTree(t)
	kf := keys.add("example.com", "s1", KeyTypeEd25519)
	conf := writeFile(t, t.TempDir(), "d.toml", "[base]\nselector = \"s1\"\n[domain.\"example.com\"]\nalgo = \"ed25519\"\n")
	d, err := Load(LoadOptions{KeyDir: keys.dir, Keys: NewKeyCache()}, conf)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := d.SignerFor("example.com")
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := d.SignerFor("example.com")
	if s1[0] != s2[0] {
		t.Error("signer not cached")
	}

	// Replace the key by rename, as a deployment would.
	newKey, err := GenerateKey(KeyOptions{Type: KeyTypeEd25519})
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := MarshalPrivateKeyPEM(newKey)
	tmp := kf.KeyPath + ".tmp"
	if err := os.WriteFile(tmp, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(tmp, later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, kf.KeyPath); err != nil {
		t.Fatal(err)
	}
	s3, err := d.SignerFor("example.com")
	if err != nil {
		t.Fatal(err)
	}
	if s3[0] == s1[0] {
		t.Fatal("signer not rebuilt after the key file changed")
	}
	zone := dnsZone{}
	zone.add(t, "s1", "example.com", newKey)
	msg := crlf("From: a@example.com\n\nx\n")
	sig, err := s3.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if res := goVerify(t, append(sig, msg...), zone); res[0] != nil {
		t.Errorf("signature with the new key: %v", res[0])
	}

	// A corrupted key file is an error naming it, not an unsigned message.
	if err := os.WriteFile(kf.KeyPath, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	later = later.Add(time.Second)
	_ = os.Chtimes(kf.KeyPath, later, later)
	if _, err := d.Sign(msg); err == nil || !strings.Contains(err.Error(), kf.KeyPath) {
		t.Errorf("corrupt key: %v", err)
	}
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), kf.KeyPath) {
		t.Errorf("Check with corrupt key: %v", err)
	}
}

func TestNewDataFromGo(t *testing.T) {
	keys := newKeyTree(t)
	kf := keys.add("example.com", "s1", KeyTypeRSA)
	no := false
	d, err := NewData(Config{
		Base: BaseConfig{Selector: "s1", OverSign: true},
		Domain: map[string]DomainConfig{
			"Example.com": {Filename: kf.KeyPath, OverSign: &no},
		},
	}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.MatchDomain("example.com") != "example.com" || d.KeyDir() != DefaultKeyDir {
		t.Errorf("MatchDomain/KeyDir: %q %q", d.MatchDomain("example.com"), d.KeyDir())
	}
	sigs, err := d.Sign(crlf("From: a@example.com\nSubject: s\n\nx\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res := goVerify(t, append(sigs, crlf("From: a@example.com\nSubject: s\n\nx\n")...), keys.zone); res[0] != nil {
		t.Error(res[0])
	}
	_, err = NewData(Config{
		Domain: map[string]DomainConfig{"a.com": {Selector: "s", Algo: "dsa"}, "A.com": {Selector: "s"}},
	}, LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `algo: invalid value "dsa"`) || !strings.Contains(err.Error(), "duplicate domain block") {
		t.Errorf("NewData errors: %v", err)
	}
}

func TestDataConcurrentSign(t *testing.T) {
	keys := newKeyTree(t)
	keys.add("example.com", "s1", KeyTypeEd25519)
	keys.add("a.example.com", "s1", KeyTypeEd25519)
	conf := writeFile(t, t.TempDir(), "d.toml", "[base]\nselector = \"s1\"\n[domain.\"example.com\"]\nalgo = \"ed25519\"\n[domain.\"*.example.com\"]\nalgo = \"ed25519\"\n")
	d, err := Load(LoadOptions{KeyDir: keys.dir, Keys: NewKeyCache()}, conf)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			var err error
			for i := 0; i < 25 && err == nil; i++ {
				from := []string{"example.com", "a.example.com"}[(g+i)%2]
				msg := crlf(fmt.Sprintf("From: u%d@%s\nSubject: %d\n\nbody %d\n", g, from, i, i))
				var sigs []byte
				if sigs, err = d.Sign(msg); err == nil {
					// Not goVerify: t.Fatal must not be called off the test goroutine.
					var vs []*msgauth.Verification
					vs, err = msgauth.VerifyWithOptions(bytes.NewReader(append(sigs, msg...)), &msgauth.VerifyOptions{LookupTXT: keys.zone.lookupTXT})
					if err == nil && (len(vs) != 1 || vs[0].Err != nil) {
						err = fmt.Errorf("verification of %s: %v", from, vs)
					}
				}
			}
			errs <- err
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
