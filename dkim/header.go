package dkim

import (
	"bytes"
	"fmt"
	"net/mail"
	"strings"
)

// headerScan is what signing needs to know about a message's header.
type headerScan struct {
	hasFrom   bool
	fromValue []byte // raw value of the first From field, folding kept
	hasBody   bool   // the header is terminated by an empty line
	endsInLF  bool   // the message ends with a line feed
}

// scanHeader walks the header fields of msg (up to the first empty line)
// and calls fn, if not nil, with each field's name as written (without
// trailing white space). It reports the first From field and whether the
// header/body separator exists.
func scanHeader(msg []byte, fn func(name []byte)) headerScan {
	var hs headerScan
	hs.endsInLF = len(msg) > 0 && msg[len(msg)-1] == '\n'
	inFrom := false // the current field is the first From field
	for i := 0; i < len(msg); {
		end := bytes.IndexByte(msg[i:], '\n')
		next := len(msg)
		if end >= 0 {
			end += i
			next = end + 1
		} else {
			end = len(msg)
		}
		line := msg[i:end]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		switch {
		case len(line) == 0:
			hs.hasBody = end < len(msg) // the empty line ends with LF
			return hs
		case line[0] == ' ' || line[0] == '\t':
			if inFrom {
				hs.fromValue = append(hs.fromValue, line...)
			}
		default:
			inFrom = false
			name, value, _ := bytes.Cut(line, []byte{':'})
			name = bytes.TrimRight(name, " \t")
			if fn != nil {
				fn(name)
			}
			if !hs.hasFrom && asciiEqualFold(name, "from") {
				hs.hasFrom = true
				inFrom = true
				hs.fromValue = append([]byte(nil), value...)
			}
		}
		i = next
	}
	return hs
}

// asciiEqualFold reports whether b equals the lower-case ASCII string s,
// ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// FromDomain returns the domain of the first address in the message's
// first From header field, lower-cased and without a trailing dot. This is
// the domain KumoMTA's dkim_sign helper uses to choose signatures
// (msg:from_header().domain), not the envelope sender.
//
// A message without a From field gives an error wrapping ErrNoFromHeader;
// a From field without a usable domain gives one wrapping
// ErrInvalidFromHeader.
func FromDomain(msg []byte) (string, error) {
	hs := scanHeader(msg, nil)
	if !hs.hasFrom {
		return "", fmt.Errorf("dkim: %w", ErrNoFromHeader)
	}
	return domainFromValue(string(hs.fromValue))
}

func domainFromValue(value string) (string, error) {
	value = strings.TrimSpace(value)
	var addr string
	if list, err := mail.ParseAddressList(value); err == nil && len(list) > 0 {
		addr = list[0].Address
	} else {
		addr = lenientAddress(value)
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", fmt.Errorf("dkim: From header %q has no address domain: %w",
			truncate(value, 200), ErrInvalidFromHeader)
	}
	domain := normalizeDomain(addr[at+1:])
	if err := checkMessageDomain(domain); err != nil {
		return "", fmt.Errorf("dkim: From header %q: %v: %w",
			truncate(value, 200), err, ErrInvalidFromHeader)
	}
	return domain, nil
}

// lenientAddress extracts an address from a From value that net/mail does
// not accept (for example an encoded word in an unknown charset): the text
// in the last angle brackets, or else the first word containing '@'.
func lenientAddress(value string) string {
	if lt := strings.LastIndexByte(value, '<'); lt >= 0 {
		if gt := strings.IndexByte(value[lt:], '>'); gt > 0 {
			return strings.TrimSpace(value[lt+1 : lt+gt])
		}
	}
	for _, w := range strings.FieldsFunc(value, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\r' || r == '\n' || r == ',' || r == ';'
	}) {
		if strings.Contains(w, "@") {
			return strings.Trim(w, "<>\"()")
		}
	}
	return ""
}

func normalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// checkMessageDomain accepts a domain taken from a message (ASCII or UTF-8
// labels) and rejects anything that could not be a host name, in
// particular anything that would be unsafe to use as a path component of
// the default key location.
func checkMessageDomain(d string) error {
	if d == "" {
		return fmt.Errorf("empty domain")
	}
	if len(d) > 253 {
		return fmt.Errorf("domain longer than 253 bytes")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" {
			return fmt.Errorf("domain %q has an empty label", d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c >= 0x80 || c == '-' || c == '_' ||
				('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
				continue
			}
			return fmt.Errorf("domain %q contains %q", d, c)
		}
	}
	return nil
}

// checkTagValue validates a DKIM signing domain or selector given in
// configuration: dot-separated labels of ASCII letters, digits, '-' and
// '_' (RFC 6376 sub-domain syntax; internationalized names must be given in
// A-label form).
func checkTagValue(what, v string) error {
	if v == "" {
		return fmt.Errorf("%s is required", what)
	}
	for _, label := range strings.Split(v, ".") {
		if label == "" {
			return fmt.Errorf("%s %q has an empty label", what, v)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c == '-' || c == '_' ||
				('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
				continue
			}
			return fmt.Errorf("%s %q contains %q (only ASCII letters, digits, '-', '_' and '.' are allowed)", what, v, c)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
