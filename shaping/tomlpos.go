package shaping

import (
	"strconv"
	"strings"
)

// BurntSushi/toml does not reveal key positions (and keeps one position
// per key name, so the elements of an array of tables share one), so
// errors are placed by scanning the document: table headers, array of
// tables headers (counted, so that element i of "[[x.automation]]" has its
// own lines) and "key =" lines. Lines inside multi-line strings are
// skipped; keys inside inline tables share the line of their outer key.

// A keyLine is a key path defined in the document and its line.
type keyLine struct {
	path []string // array of tables elements appear as "#0", "#1", ...
	line int
}

// tomlIndex returns "#i", the path part naming element i of an array.
func tomlIndex(i int) string { return "#" + strconv.Itoa(i) }

// scanTOMLKeys lists the keys defined in a TOML document with their lines.
func scanTOMLKeys(doc string) []keyLine {
	var out []keyLine
	var table []string
	arrays := map[string]int{} // array of tables path -> elements so far
	inString := ""             // multi-line string delimiter while inside one
	for n, line := range strings.Split(doc, "\n") {
		lineNo := n + 1
		s := strings.TrimSpace(line)
		if inString != "" {
			if strings.Count(s, inString)%2 == 1 {
				inString = ""
			}
			continue
		}
		if s == "" || s[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(s, "[["):
			parts, rest, ok := parseTOMLKey(s[2:])
			if !ok || !strings.HasPrefix(strings.TrimSpace(rest), "]]") {
				continue
			}
			base := resolveArrays(parts, arrays)
			k := strings.Join(base, "\x00")
			i := arrays[k]
			arrays[k] = i + 1
			table = append(base, tomlIndex(i))
			out = append(out, keyLine{path: table, line: lineNo})
			continue
		case s[0] == '[':
			parts, rest, ok := parseTOMLKey(s[1:])
			if !ok || !strings.HasPrefix(strings.TrimSpace(rest), "]") {
				continue
			}
			table = resolveArrays(parts, arrays)
			out = append(out, keyLine{path: table, line: lineNo})
			continue
		}
		parts, rest, ok := parseTOMLKey(s)
		if !ok || !strings.HasPrefix(strings.TrimSpace(rest), "=") {
			continue
		}
		full := append(append([]string(nil), table...), parts...)
		out = append(out, keyLine{path: full, line: lineNo})
		for _, d := range []string{"'''", `"""`} {
			if strings.Count(rest, d)%2 == 1 {
				inString = d
			}
		}
	}
	return out
}

// resolveArrays inserts the current element index after every prefix of
// parts that names an array of tables: in [[a.automation]] followed by
// [a.automation.x], the latter belongs to the last element.
func resolveArrays(parts []string, arrays map[string]int) []string {
	var out []string
	for i := range parts {
		out = append(out, parts[i])
		if i == len(parts)-1 {
			break
		}
		if n, ok := arrays[strings.Join(out, "\x00")]; ok && n > 0 {
			out = append(out, tomlIndex(n-1))
		}
	}
	return out
}

// parseTOMLKey parses a possibly dotted, possibly quoted key at the start
// of s and returns its parts and the rest of s.
func parseTOMLKey(s string) (parts []string, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return nil, "", false
		}
		var part string
		switch s[0] {
		case '"':
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return nil, "", false
			}
			u, err := strconv.Unquote(s[:end+1])
			if err != nil {
				u = s[1:end]
			}
			part, s = u, s[end+1:]
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return nil, "", false
			}
			part, s = s[1:end+1], s[end+2:]
		default:
			end := 0
			for end < len(s) && (s[end] == '_' || s[end] == '-' || s[end] >= 'a' && s[end] <= 'z' ||
				s[end] >= 'A' && s[end] <= 'Z' || s[end] >= '0' && s[end] <= '9') {
				end++
			}
			if end == 0 {
				return nil, "", false
			}
			part, s = s[:end], s[end:]
		}
		parts = append(parts, part)
		s = strings.TrimLeft(s, " \t")
		if !strings.HasPrefix(s, ".") {
			return parts, s, true
		}
		s = s[1:]
	}
}

// lineOf returns the line that best locates path: the first definition
// sharing the longest prefix with it, or 0.
func lineOf(keys []keyLine, path []string) int {
	best, bestLen := 0, 0
	for _, k := range keys {
		n := 0
		for n < len(k.path) && n < len(path) && k.path[n] == path[n] {
			n++
		}
		// A definition deeper than the path but not below it does not
		// locate it.
		if n < len(k.path) && n < len(path) {
			continue
		}
		if n > bestLen {
			best, bestLen = k.line, n
		}
	}
	return best
}

// formatPath writes a key path the way it reads in a file, with element
// indices in brackets: "comcast.net".automation[1].regex.
func formatPath(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if strings.HasPrefix(p, "#") {
			b.WriteString("[" + p[1:] + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		if p != "" && strings.IndexFunc(p, func(r rune) bool {
			return !(r == '_' || r == '-' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9'))
		}) < 0 {
			b.WriteString(p)
		} else {
			b.WriteString(strconv.Quote(p))
		}
	}
	return b.String()
}
