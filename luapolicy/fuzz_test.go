package luapolicy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Header edits keep everything they do not touch: parsing and writing
// back a message is the identity, and removing a header removes only
// that header's lines.
func FuzzHeaderRoundTrip(f *testing.F) {
	f.Add([]byte("From: a@example.com\r\nSubject: x\r\n folded\r\n\r\nbody\r\n"))
	f.Add([]byte("X-A: 1\r\nno colon line\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("Subject: no end"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := parseHeader(data)
		if got := h.bytes(); !bytes.Equal(got, data) {
			t.Fatalf("round trip changed the message:\n%q\n%q", data, got)
		}
		before := len(h.fields)
		h.remove(func(f headerField) bool { return f.is("subject") })
		out := parseHeader(h.bytes())
		for _, f := range out.fields {
			if f.is("subject") {
				t.Fatalf("Subject survived removal: %q", h.bytes())
			}
		}
		if len(out.fields) > before {
			t.Fatalf("removal added fields")
		}
	})
}

// listener_domains files load or fail with an error, never panic.
func FuzzListenerDomains(f *testing.F) {
	f.Add([]byte("[\"example.com\"]\nrelay_to = true\n"))
	f.Add([]byte("[listener.\"127.0.0.1:25\".\"a.example\"]\nlog_oob = \"LogThenDrop\"\nrelay_from = [\"10.0.0.0/8\"]\n"))
	f.Add([]byte("[\"*\"]\nlog_arf = 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "listener_domains.toml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tbl, err := loadListenerDomains([]string{path}, func(string) {})
		if err == nil {
			tbl.lookup("127.0.0.1:25", "a.example")
		}
	})
}
