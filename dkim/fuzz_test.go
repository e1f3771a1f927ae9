package dkim

import (
	"os"
	"strings"
	"testing"
)

// FuzzMergeTOML checks that arbitrary dkim_data documents never panic the
// loader and that accepted documents produce a valid configuration or a
// clean error.
func FuzzMergeTOML(f *testing.F) {
	if data, err := os.ReadFile("testdata/kumomta_dkim_data.toml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("[base]\nselector='s'\n[domain.\"*.x.com\"]\nalgo='ed25519'\nover_sign=false\n[signature.a]\ndomain='e.com'\n"))
	f.Add([]byte("[domain.\"x\".y]\nz=1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		if err := c.MergeTOML("fuzz.toml", data); err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if d, err := NewData(c, LoadOptions{KeyDir: "/nonexistent/keys"}); err == nil {
			d.MatchDomain("a.x.com")
			_ = d.Warnings()
		}
	})
}

// FuzzSign checks that header scanning and signing never panic and never
// modify the message.
func FuzzSign(f *testing.F) {
	for _, m := range testMessages() {
		f.Add(m.msg)
	}
	f.Add([]byte("From: a@b\n\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		s, err := NewSigner(Options{Domain: "example.com", Selector: "s", Key: testKey(t, "ed25519"), OverSign: true})
		if err != nil {
			t.Fatal(err)
		}
		orig := string(msg)
		_, _ = s.Sign(msg)
		_, _ = FromDomain(msg)
		if string(msg) != orig {
			t.Fatal("message modified")
		}
	})
}
