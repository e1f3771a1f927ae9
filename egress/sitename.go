package egress

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// SiteName returns KumoMTA's site name for a list of MX hosts: the host
// names factored into one pseudo-regex. Ready queues and shaping rules key
// on it, so every domain served by the same MX set shares one queue and
// one set of limits (mx_rollup).
//
// The algorithm is that of factor_names in KumoMTA's
// crates/mailexchanger/src/lib.rs:
//
//   - A trailing ":port" (see CutPort) is split off; names are lower-cased
//     and a trailing dot is ignored. Names that are not valid DNS names
//     (an empty label, a label over 63 bytes, over 255 bytes in all) are
//     skipped. "." and "" are the root: no labels.
//   - Each name is split into labels and aligned from the right (the top
//     level domain first); a port is appended to the top level label as
//     "com:2525".
//   - For each label position the distinct labels are collected in order
//     of first appearance; a name too short to have a label there
//     contributes "?".
//   - A position with one distinct label is written as that label, one
//     with several as "(a|b|c)"; if "?" was among them, "?" is appended
//     and "?" itself is not listed.
//   - Positions are joined with "." from the left.
//
// Order matters: the same hosts in another order give another name.
// ResolveMX passes hosts ordered by preference, then by name within one
// preference, as KumoMTA does. Examples:
//
//	gmail-smtp-in.l.google.com, alt1.gmail-smtp-in.l.google.com, ..., alt4...
//	  => (alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com
//	mta5.am0.yahoodns.net, mta6.am0.yahoodns.net, mta7.am0.yahoodns.net
//	  => (mta5|mta6|mta7).am0.yahoodns.net
//
// Non-ASCII names should be given in their A-label (punycode) form; only
// ASCII letters are lower-cased.
func SiteName(hosts []string) string {
	split := make([][]string, 0, len(hosts))
	width := 0
	for _, h := range hosts {
		name, port, hasPort := CutPort(h)
		labels, ok := dnsLabels(name)
		if !ok {
			continue
		}
		if hasPort && len(labels) > 0 {
			labels[len(labels)-1] += ":" + strconv.FormatUint(uint64(port), 10)
		}
		slices.Reverse(labels)
		width = max(width, len(labels))
		split = append(split, labels)
	}

	columns := make([][]string, width)
	add := func(i int, label string) {
		if !slices.Contains(columns[i], label) {
			columns[i] = append(columns[i], label)
		}
	}
	for _, labels := range split {
		for i, l := range labels {
			add(i, l)
		}
		for i := len(labels); i < width; i++ {
			add(i, "?")
		}
	}

	parts := make([]string, 0, width)
	for _, col := range columns {
		optional := slices.Contains(col, "?")
		col = slices.DeleteFunc(slices.Clone(col), func(s string) bool { return s == "?" })
		var part string
		if len(col) == 1 {
			part = col[0]
		} else {
			part = "(" + strings.Join(col, "|") + ")"
		}
		if optional {
			part += "?"
		}
		parts = append(parts, part)
	}
	slices.Reverse(parts)
	return strings.Join(parts, ".")
}

// MXListSiteName returns the site name KumoMTA gives a queue whose SMTP
// protocol has an explicit mx_list: "mx_list:" followed by the entries,
// verbatim, joined by commas. An entry is the string as configured (a
// name, "[ip]" literal, optionally with ":port") or, for a pre-resolved
// {name, addr} entry, the address as written by KumoMTA ("10.0.0.1",
// "10.0.0.1:2025", "[::1]:2025"). Example: mx_list:smart.host.local,10.0.0.1
func MXListSiteName(entries []string) string {
	return "mx_list:" + strings.Join(entries, ",")
}

// ReadyQueueName returns KumoMTA's ready queue name for an egress source,
// site name and protocol: "<source>-><site>@<proto>", where proto is
// "smtp_client" for SMTP delivery. Example:
// ip-1->(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com@smtp_client
func ReadyQueueName(source, site, proto string) string {
	return source + "->" + site + "@" + proto
}

// dnsLabels splits a DNS name into lower-case labels, ignoring one trailing
// dot. It reports false for names KumoMTA's name parser rejects: empty
// labels, labels over 63 bytes, names over 255 bytes in wire form.
func dnsLabels(name string) ([]string, bool) {
	name = strings.TrimSuffix(strings.TrimSpace(name), ".")
	if name == "" {
		return nil, true
	}
	labels := strings.Split(asciiLower(name), ".")
	wire := 1
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return nil, false
		}
		wire += len(l) + 1
	}
	if wire > 255 {
		return nil, false
	}
	return labels, true
}

// asciiLower lower-cases ASCII letters only, as DNS does.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// CutPort splits a trailing ":port" off s as KumoMTA's has_colon_port
// does: only when the text after the last colon is a valid port number
// and the text before it contains no colon, so a bare IPv6 address such as
// "::1" is not split. In addition "[literal]:port" is split at the colon
// after the closing bracket. It returns s unchanged and false when there is
// no port.
func CutPort(s string) (host string, port uint16, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, 0, false
	}
	head, tail := s[:i], s[i+1:]
	if strings.HasPrefix(s, "[") {
		if !strings.HasSuffix(head, "]") || strings.Count(head, "]") != 1 {
			return s, 0, false
		}
	} else if strings.Contains(head, ":") {
		return s, 0, false
	}
	p, err := strconv.ParseUint(tail, 10, 16)
	if err != nil {
		return s, 0, false
	}
	return head, uint16(p), true
}

// sortMX orders MX records as KumoMTA does before naming the site: by
// preference, then by fully qualified lower-case name within a preference.
func sortMX(mx []mxRecord) []mxRecord {
	out := slices.Clone(mx)
	slices.SortStableFunc(out, func(a, b mxRecord) int {
		if c := cmp.Compare(a.pref, b.pref); c != 0 {
			return c
		}
		return strings.Compare(a.host+".", b.host+".")
	})
	return out
}
