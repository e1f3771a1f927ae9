package mta

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzHeaderValue checks headerValue on arbitrary messages: it never
// panics, and for a message whose lines all end in CRLF (what the listener
// accepts) a value it returns is one line, found in the header block
// under the name asked for.
func FuzzHeaderValue(f *testing.F) {
	f.Add([]byte("Subject: hello\r\n\r\nbody\r\n"), "subject")
	f.Add([]byte("From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\n\r\nSubject: body\r\n"), "Subject")
	f.Add([]byte("Subject : spaced\r\nX: y\r\n"), "SUBJECT")
	f.Add([]byte("\r\nSubject: in the body\r\n"), "Subject")
	f.Add([]byte("Subject: unterminated"), "Subject")
	f.Add([]byte("Subject: folded\r\n "), "Subject")
	f.Add([]byte(":\r\n"), "")
	f.Add([]byte("\u017fubject: long s\r\nSubject: real\r\n\r\n"), "Subject")
	f.Fuzz(func(t *testing.T, msg []byte, name string) {
		v, ok := headerValue(msg, name)
		if !ok {
			if v != "" {
				t.Fatalf("value %q without a match", v)
			}
			return
		}
		if strings.ContainsAny(v, "\r\n") && !hasBareCROrLF(msg) {
			t.Fatalf("value %q spans lines", v)
		}
		// The field is in the header block: before the first empty line.
		header := msg
		if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
			header = msg[:i+2]
		}
		if !bytes.Contains(bytes.ToLower(header), bytes.ToLower([]byte(strings.TrimRight(name, " \t")))) {
			t.Fatalf("found %q for %q outside the header block of %q", v, name, msg)
		}
	})
}

func hasBareCROrLF(b []byte) bool {
	return bytes.Count(b, []byte("\r")) != bytes.Count(b, []byte("\r\n")) || bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n"))
}

// FuzzHeaderRoundTrip builds a header field from fuzzed parts and checks
// that headerValue finds it, unfolded, among other fields. value is
// folded at each '|'.
func FuzzHeaderRoundTrip(f *testing.F) {
	f.Add("Subject", "hello world", "X-Other")
	f.Add("x-kumoref", "a|b|  c  ", "Subject")
	f.Add("To", "|", "From")
	f.Add("DKIM-Signature", "v=1; a=rsa-sha256;| b=abc|def", "Received")
	f.Fuzz(func(t *testing.T, name, value, other string) {
		if !isFieldName(name) || !isFieldName(other) || strings.EqualFold(name, other) || strings.ContainsAny(value, "\r\n") {
			return
		}
		segs := strings.Split(value, "|")
		var b strings.Builder
		b.WriteString(other + ": first\r\n")
		b.WriteString(name + ": " + segs[0] + "\r\n")
		want := make([]string, len(segs))
		want[0] = strings.TrimSpace(segs[0])
		for i, s := range segs[1:] {
			b.WriteString("\t" + s + "\r\n")
			want[i+1] = strings.TrimSpace(s)
		}
		b.WriteString(name + ": second\r\n\r\n" + name + ": body\r\n")
		got, ok := headerValue([]byte(b.String()), strings.ToUpper(name))
		if w := strings.Join(want, " "); !ok || got != w {
			t.Fatalf("headerValue(%q, %q) = %q, %v; want %q", b.String(), name, got, ok, w)
		}
		if got, ok := headerValue([]byte(b.String()), other); !ok || got != "first" {
			t.Fatalf("other field: %q, %v", got, ok)
		}
	})
}

// isFieldName reports whether s is an RFC 5322 field name: printable
// ASCII except colon, at least one character.
func isFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}

// FuzzQueueName checks that ParseQueueName inverts QueueName for every
// set of parts that can be told apart in the joined name, and never panics
// on any name.
func FuzzQueueName(f *testing.F) {
	f.Add("spring", "acme", "Example.COM", "mx.example.net")
	f.Add("", "acme", "example.com", "")
	f.Add("spring", "", "example.com", "")
	f.Add("", "", "example.com", "relay!x")
	f.Add("", "", "", "")
	f.Add("c", "t:u", "d", "")
	f.Fuzz(func(t *testing.T, campaign, tenant, domain, routing string) {
		// QueueName is not invertible when a part holds the separator
		// that ends it (or, without a campaign, a tenant holds ':').
		ambiguous := strings.ContainsAny(campaign, ":@") || strings.Contains(tenant, "@") ||
			campaign == "" && strings.Contains(tenant, ":") || strings.ContainsAny(domain, "@!") ||
			campaign == "" && tenant == "" && strings.Contains(routing, "@")
		name := QueueName(campaign, tenant, domain, routing)
		// Recovery builds the name from packed meta: the same name.
		qf := queueFields{campaign: []byte(campaign), tenant: []byte(tenant), routing: []byte(routing), firstRcpt: []byte("user@" + domain)}
		if strings.Contains(domain, "@") {
			qf.firstRcpt = []byte(domain) // the domain is what follows the last '@'
			name = QueueName(campaign, tenant, recipientDomain(domain), routing)
		}
		if got := string(qf.appendName(nil)); got != name {
			t.Fatalf("appendName %q, QueueName %q", got, name)
		}
		name = QueueName(campaign, tenant, domain, routing)
		c, tn, d, r := ParseQueueName(name)
		if !ambiguous && (c != campaign || tn != tenant || d != strings.ToLower(domain) || r != routing) {
			t.Fatalf("QueueName(%q, %q, %q, %q) = %q parses as (%q, %q, %q, %q)", campaign, tenant, domain, routing, name, c, tn, d, r)
		}
	})
}

// FuzzParseQueueName checks that any name parses into parts that join
// into a name that parses into the same parts (the domain lower-cased),
// unless the parts themselves are ambiguous.
func FuzzParseQueueName(f *testing.F) {
	for _, s := range []string{"spring:acme@example.com!mx.example.net", "acme@Example.COM", "example.com", ":@", "@a@b", ":a:b@c", "c:@d!e!f", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, tn, d, r := ParseQueueName(name)
		if c == "" && (strings.Contains(tn, ":") || tn == "" && strings.Contains(d+r, "@")) {
			return // no name can say this
		}
		q := QueueName(c, tn, d, r)
		if c2, t2, d2, r2 := ParseQueueName(q); c2 != c || t2 != tn || d2 != strings.ToLower(d) || r2 != r {
			t.Fatalf("%q parses as (%q, %q, %q, %q), joined %q, which parses as (%q, %q, %q, %q)", name, c, tn, d, r, q, c2, t2, d2, r2)
		}
	})
}

// FuzzMessageHeader checks the Message methods a policy uses on received
// data: Header after PrependHeader finds the new field first, and
// QueueName follows the first recipient's domain.
func FuzzMessageHeader(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n"), "X-Tag", "v", "User@Example.NET")
	f.Add([]byte(""), "Subject", "new", "a@b@c")
	f.Fuzz(func(t *testing.T, data []byte, name, value, rcpt string) {
		if !isFieldName(name) || strings.ContainsAny(value, "\r\n") || len(data) > 0 && (data[0] == ' ' || data[0] == '\t') {
			return // (data starting with white space would continue the new field)
		}
		m := &Message{recipients: []string{rcpt}, meta: map[string]any{}, data: bytes.Clone(data)}
		m.PrependHeader(name, value)
		if got, ok := m.Header(name); !ok || got != strings.TrimSpace(value) {
			t.Fatalf("Header(%q) after PrependHeader = %q, %v", name, got, ok)
		}
		if !bytes.HasSuffix(m.Data(), data) {
			t.Fatal("PrependHeader changed the message")
		}
		_, _, d, _ := ParseQueueName(m.QueueName())
		if want := recipientDomain(rcpt); !strings.ContainsAny(want, "!") && d != want {
			t.Fatalf("recipient %q queued for domain %q", rcpt, d)
		}
	})
}

// Header names match in ASCII only: "\u017fubject" (with a long s) is not
// Subject, though strings.EqualFold says it is.
func TestHeaderValueASCIIFold(t *testing.T) {
	msg := []byte("\u017fubject: long s\r\n\u212a-Tag: kelvin\r\nSUBJECT: real\r\n\r\n")
	if v, ok := headerValue(msg, "subject"); !ok || v != "real" {
		t.Errorf("Subject = %q, %v", v, ok)
	}
	if v, ok := headerValue(msg, "k-tag"); ok {
		t.Errorf("K-Tag matched the Kelvin sign: %q", v)
	}
}
