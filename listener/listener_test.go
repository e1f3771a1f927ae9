package listener

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-smtp"
)

func TestReadData(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int // 0 ok, else SMTP code
	}{
		{"plain", "Subject: x\r\n\r\nbody\r\n", 0},
		{"empty", "", 0},
		{"no final CRLF", "Subject: x\r\n\r\nbody", 0},
		{"bare LF", "a\nb\r\n", 552},
		{"bare CR", "a\rb\r\n", 552},
		{"CR at end", "a\r", 552},
		{"LF CR", "a\n\r\n", 552},
		{"line at limit", strings.Repeat("x", 100) + "\r\n", 0},
		{"line over limit", strings.Repeat("x", 101) + "\r\n", 552},
		{"last line over limit", "a\r\n" + strings.Repeat("x", 101), 552},
	}
	for _, tc := range tests {
		// One byte per Read puts every CR/LF pair across a chunk boundary.
		for _, r := range map[string]io.Reader{"whole": strings.NewReader(tc.in), "bytewise": iotest.OneByteReader(strings.NewReader(tc.in))} {
			var buf bytes.Buffer
			err := readData(r, &buf, 100)
			var se *smtp.SMTPError
			switch {
			case tc.want == 0 && err != nil:
				t.Errorf("%s: unexpected error %v", tc.name, err)
			case tc.want != 0 && (!errors.As(err, &se) || se.Code != tc.want):
				t.Errorf("%s: got %v, want %d", tc.name, err, tc.want)
			case tc.want == 0 && buf.String() != tc.in:
				t.Errorf("%s: data changed", tc.name)
			}
		}
	}
}

func TestDomainMap(t *testing.T) {
	m := DomainMap{
		"*":               {LogOOB: LogThenRelay},
		"example.com":     {RelayTo: true},
		"*.example.com":   {LogARF: LogThenDrop},
		"*.b.example.com": {RelayTo: true, LogARF: LogThenRelay},
		"www.example.com": {},
	}
	tests := []struct {
		domain string
		want   *ListenerDomain
	}{
		{"example.com", m["example.com"]},
		{"EXAMPLE.com", m["example.com"]},
		{"a.example.com", m["*.example.com"]},
		{"x.b.example.com", m["*.b.example.com"]},
		{"www.example.com", m["www.example.com"]},
		{"other.net", m["*"]},
	}
	for _, tc := range tests {
		got, err := m.LookupListenerDomain(context.Background(), tc.domain, "127.0.0.1:25")
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.domain, got, tc.want)
		}
	}
	if d, _ := (DomainMap{}).LookupListenerDomain(context.Background(), "x.net", ""); d != nil {
		t.Error("empty map matched")
	}
}

func TestParseHelpers(t *testing.T) {
	p, err := ParsePrefixes([]string{"10.0.0.0/24", "127.0.0.1", "::1", "::ffff:192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !prefixesContain(p, netip.MustParseAddr("10.0.0.7")) || prefixesContain(p, netip.MustParseAddr("10.0.1.7")) ||
		!prefixesContain(p, netip.MustParseAddr("::ffff:127.0.0.1")) || !prefixesContain(p, netip.MustParseAddr("192.0.2.1")) {
		t.Errorf("prefix matching wrong: %v", p)
	}
	for _, bad := range []string{"10.0.0.0/33", "not-an-ip", ""} {
		if _, err := ParsePrefixes([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for in, want := range map[string]Disposition{"true": LogThenRelay, "false": Ignore, "LogThenDrop": LogThenDrop, "Ignore": Ignore} {
		if got, err := ParseDisposition(in); err != nil || got != want {
			t.Errorf("ParseDisposition(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseDisposition("sometimes"); err == nil {
		t.Error("bad disposition accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{MaxMessageSize: -1},
		{LineLengthLimit: 10},
		{BatchHandling: "Sometimes"},
		{ClientTimeout: -1},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	c, err := Config{}.withDefaults()
	if err != nil || c.MaxMessageSize != 20<<20 || c.MaxRecipients != 1024 || len(c.RelayHosts) != 2 || c.TraceHeaders.HeaderName != "X-KumoRef" {
		t.Errorf("defaults %+v, %v", c, err)
	}
}
