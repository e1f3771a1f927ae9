package egress

import "strings"

// smtpPath formats an address for MAIL FROM:<...> or RCPT TO:<...>. A
// local part that is not a dot-atom (RFC 5321 section 4.1.2) is sent
// quoted: go-smtp's server hands us `"v@a.example"@b.example` unquoted,
// and sending that on unquoted would let the next hop read it as an
// address at a.example.
func smtpPath(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr // empty reverse path, or a bare postmaster
	}
	local, domain := addr[:i], addr[i:]
	if isDotAtom(local) {
		return addr
	}
	var b strings.Builder
	b.Grow(len(addr) + 4)
	b.WriteByte('"')
	for j := 0; j < len(local); j++ {
		if c := local[j]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[j])
	}
	b.WriteByte('"')
	b.WriteString(domain)
	return b.String()
}

// isDotAtom reports whether s is a dot-atom: atoms of atext joined by
// single dots. Bytes of 0x80 and above count as atext (RFC 6531).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80, c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
