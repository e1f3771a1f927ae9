package reports

import (
	"bytes"
	"strings"
)

// Field is one header field: its name as written and its value, unfolded
// (continuation lines joined by a single space) and trimmed.
type Field struct {
	Name  string
	Value string
}

// Fields is a header section or a group of report fields, in order.
type Fields []Field

// Get returns the value of the first field named name (case-insensitive),
// or "".
func (fs Fields) Get(name string) string {
	for _, f := range fs {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Values returns the values of every field named name (case-insensitive).
func (fs Fields) Values(name string) []string {
	var out []string
	for _, f := range fs {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// maxFields bounds the fields kept from one header section, so that a
// hostile report cannot make the parsers allocate without limit.
const maxFields = 1000

// normalizeNewlines turns CRLF and lone CR into LF.
func normalizeNewlines(b []byte) []byte {
	if !bytes.ContainsRune(b, '\r') {
		return b
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}

// parseFields reads "Name: value" lines, with continuation lines, up to
// the first empty line or the end of b; it returns the fields and the
// rest of b after that empty line. It is lenient as the reports in the
// wild require: a line without a colon or with an invalid name is
// skipped rather than ending the section, and a continuation line before
// any field is ignored. b must have LF line endings.
func parseFields(b []byte) (Fields, []byte) {
	var fs Fields
	valid := false // whether the last line started a kept field
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return fs, b
		}
		if line[0] == ' ' || line[0] == '\t' {
			if valid {
				last := &fs[len(fs)-1]
				cont := strings.TrimSpace(string(line))
				if last.Value == "" {
					last.Value = cont
				} else {
					last.Value += " " + cont
				}
			}
			continue
		}
		valid = false
		name, value, ok := bytes.Cut(line, []byte(":"))
		name = bytes.TrimRight(name, " \t")
		if !ok || !validName(name) || len(fs) >= maxFields {
			continue
		}
		fs = append(fs, Field{Name: string(name), Value: strings.TrimSpace(string(value))})
		valid = true
	}
	return fs, nil
}

// validName reports whether b is an RFC 5322 field name: printable ASCII
// other than colon and space.
func validName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// fieldGroups splits b (LF line endings) into groups of fields separated
// by empty lines, as the message/delivery-status body is written: the
// per-message group first, then one group per recipient. Empty groups
// (runs of blank lines) are skipped. At most limit groups are read.
func fieldGroups(b []byte, limit int) []Fields {
	var groups []Fields
	for len(b) > 0 && len(groups) < limit {
		var fs Fields
		fs, b = parseFields(b)
		if len(fs) > 0 {
			groups = append(groups, fs)
		}
	}
	return groups
}

// typedValue splits a "type; value" field (Final-Recipient, Reporting-MTA,
// Diagnostic-Code, ...) into its parts. A value without a semicolon has
// an empty type.
func typedValue(s string) (typ, value string) {
	t, v, ok := strings.Cut(s, ";")
	if !ok {
		return "", strings.TrimSpace(s)
	}
	return strings.ToLower(strings.TrimSpace(t)), strings.TrimSpace(v)
}

// bareAddress strips the angle brackets and surrounding space of an
// address, and a leading "rfc822;" left by senders that doubled it.
func bareAddress(s string) string {
	s = strings.TrimSpace(s)
	if t, v, ok := strings.Cut(s, ";"); ok && strings.EqualFold(strings.TrimSpace(t), "rfc822") {
		s = strings.TrimSpace(v)
	}
	if i := strings.IndexByte(s, '<'); i >= 0 {
		if j := strings.IndexByte(s[i:], '>'); j > 0 {
			s = s[i+1 : i+j]
		}
	}
	return strings.TrimSpace(s)
}
