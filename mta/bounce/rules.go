package bounce

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// RuleError reports a problem in a rules file: a file that cannot be
// read or decoded, or a regular expression that does not compile.
type RuleError struct {
	File    string // the file name, as given
	Line    int    // 1-based line of the problem, 0 if unknown
	Class   string // the class whose rule is bad, "" for file-level errors
	Pattern string // the bad pattern, "" for file-level errors
	Err     error  // the underlying error
}

func (e *RuleError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Class != "" {
		fmt.Fprintf(&b, "rules.%s: invalid regex %q: ", e.Class, e.Pattern)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *RuleError) Unwrap() error { return e.Err }

// pendingRule is a rule read from a file, with its regexp compiled.
type pendingRule struct {
	class   string
	pattern string
	re      *regexp.Regexp
	origin  string
}

// Builder collects rules in order and builds a Classifier. Rules added
// earlier take precedence over rules added later, as files listed earlier
// do in KumoMTA's kumo.configure_bounce_classifier. A Builder is not safe
// for concurrent use; the Classifier it builds is.
type Builder struct {
	rules []pendingRule
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder { return &Builder{} }

// LoadClassifier builds a Classifier from rules files, as
// kumo.configure_bounce_classifier{files = {...}} does: each file is
// TOML (name ending in .toml) or JSON (.json) with a "rules" table that
// maps class names to lists of regular expressions. Every file is read
// and checked; the error, if any, joins one *RuleError per problem found.
// With no files the classifier has no rules and classifies everything
// as Uncategorized.
func LoadClassifier(files ...string) (*Classifier, error) {
	b := NewBuilder()
	var errs []error
	for _, f := range files {
		if err := b.AddFile(f); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b.Build(), nil
}

// AddFile appends the rules of a rules file, TOML or JSON according to the
// extension of its name. On error no rule of the file is added.
func (b *Builder) AddFile(path string) error {
	var decode func(string, []byte) error
	switch {
	case strings.HasSuffix(path, ".toml"):
		decode = b.AddTOML
	case strings.HasSuffix(path, ".json"):
		decode = b.AddJSON
	default:
		return &RuleError{File: path, Err: errors.New("classifier files must have either .toml or .json filename extension")}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return &RuleError{File: path, Err: err}
	}
	return decode(path, data)
}

// AddTOML appends the rules of a TOML rules file; name is used in errors.
// The classes are taken in the order they appear in the file, and the
// patterns of each class in list order. On error no rule is added; the
// error joins one *RuleError per problem found.
func (b *Builder) AddTOML(name string, data []byte) error {
	var doc struct {
		Rules map[string][]string `toml:"rules"`
	}
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		return tomlError(name, data, err)
	}
	if !md.IsDefined("rules") {
		return &RuleError{File: name, Err: errors.New(`missing [rules] table`)}
	}
	var classes []string
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == "rules" {
			classes = append(classes, k[1])
		}
	}
	lines := newLiteralIndex(data)
	return b.addClasses(name, classes, doc.Rules, func(class, pattern string) int {
		return lines.line(pattern)
	})
}

// tomlLineRE finds the line number in the decoding errors of BurntSushi/toml
// that are not ParseErrors ("toml: line 7 (last key ...): ...").
var tomlLineRE = regexp.MustCompile(`^toml: line (\d+)\b`)

func tomlError(name string, data []byte, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = fmt.Sprintf("%s (last key %q)", msg, pe.LastKey)
		}
		line := pe.Position.Line
		if st := pe.Position.Start; st > 0 && st < len(data) {
			// The line holding the offending byte: for an error at an
			// end of line, the line that it ends.
			line = bytes.Count(data[:st], []byte{'\n'}) + 1
		}
		return &RuleError{File: name, Line: line, Err: errors.New(msg)}
	}
	re := &RuleError{File: name, Err: err}
	if m := tomlLineRE.FindStringSubmatch(err.Error()); m != nil {
		re.Line, _ = strconv.Atoi(m[1])
		re.Err = errors.New(strings.TrimSpace(strings.TrimPrefix(err.Error(), m[0]+":")))
		if s := re.Err.Error(); strings.HasPrefix(s, "(last key") {
			// "(last key "rules.X"): incompatible types: ..."
			if i := strings.Index(s, "): "); i > 0 {
				re.Err = fmt.Errorf("%s %s)", s[i+3:], s[:i])
			}
		}
	}
	return re
}

// AddJSON appends the rules of a JSON rules file, {"rules": {"Class":
// ["regex", ...], ...}}; name is used in errors. Key order is kept. As
// with serde, a repeated class key replaces the earlier list in place,
// and keys other than "rules" are ignored. On error no rule is added.
func (b *Builder) AddJSON(name string, data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	lineAt := func(off int64) int {
		return bytes.Count(data[:min(int(off), len(data))], []byte{'\n'}) + 1
	}
	fail := func(err error) error {
		off := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		return &RuleError{File: name, Line: lineAt(off), Err: err}
	}
	expectDelim := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil {
			return fail(err)
		}
		if d, ok := tok.(json.Delim); !ok || d != want {
			return fail(fmt.Errorf("expected %q, found %v", want, tok))
		}
		return nil
	}

	var classes []string
	rules := map[string][]string{}
	patternLines := map[string][]int{} // class -> line of each pattern
	haveRules := false
	if err := expectDelim('{'); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fail(err)
		}
		key, _ := tok.(string)
		if key != "rules" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fail(err)
			}
			continue
		}
		haveRules = true
		if err := expectDelim('{'); err != nil {
			return err
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return fail(err)
			}
			class, _ := tok.(string)
			if err := expectDelim('['); err != nil {
				return err
			}
			var list []string
			var lines []int
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return fail(err)
				}
				s, ok := tok.(string)
				if !ok {
					return fail(fmt.Errorf("rules.%s: expected a string, found %v", class, tok))
				}
				list = append(list, s)
				lines = append(lines, lineAt(dec.InputOffset()))
			}
			if err := expectDelim(']'); err != nil {
				return err
			}
			if _, seen := rules[class]; !seen {
				classes = append(classes, class)
			}
			rules[class] = list
			patternLines[class] = lines
		}
		if err := expectDelim('}'); err != nil {
			return err
		}
	}
	if err := expectDelim('}'); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("unexpected data after the top-level object")
		}
		return fail(err)
	}
	if !haveRules {
		return &RuleError{File: name, Err: errors.New(`missing "rules" object`)}
	}
	next := map[string]int{}
	return b.addClasses(name, classes, rules, func(class, _ string) int {
		i := next[class]
		next[class]++
		if i < len(patternLines[class]) {
			return patternLines[class][i]
		}
		return 0
	})
}

// addClasses compiles the patterns of each class, in order, and appends
// them if all compile. lineOf gives the line of each pattern in turn.
func (b *Builder) addClasses(name string, classes []string, rules map[string][]string, lineOf func(class, pattern string) int) error {
	var errs []error
	var add []pendingRule
	for _, class := range classes {
		if class == "" {
			errs = append(errs, &RuleError{File: name, Err: errors.New("empty class name in rules")})
			continue
		}
		for _, p := range rules[class] {
			line := lineOf(class, p)
			re, err := compilePattern(p)
			if err != nil {
				errs = append(errs, &RuleError{File: name, Line: line, Class: class, Pattern: p, Err: err})
				continue
			}
			origin := name
			if line > 0 {
				origin += ":" + strconv.Itoa(line)
			}
			add = append(add, pendingRule{class: class, pattern: p, re: re, origin: origin})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	b.rules = append(b.rules, add...)
	return nil
}

// AddRule appends one rule. It returns an error if pattern does not
// compile or class is empty.
func (b *Builder) AddRule(class, pattern string) error {
	if class == "" {
		return errors.New("bounce: empty class name")
	}
	re, err := compilePattern(pattern)
	if err != nil {
		return fmt.Errorf("bounce: class %s: invalid regex %q: %w", class, pattern, err)
	}
	b.rules = append(b.rules, pendingRule{class: class, pattern: pattern, re: re})
	return nil
}

// AddDefaults appends the built-in default rules (see DefaultClassifier).
// Rules added before them take precedence, so a program can refine the
// defaults with rules of its own added first.
func (b *Builder) AddDefaults() {
	b.rules = append(b.rules, defaultRules()...)
}

// Build returns a Classifier for the rules added so far. The Builder may
// be used further; later additions do not affect the Classifier.
func (b *Builder) Build() *Classifier {
	return newClassifier(append([]pendingRule(nil), b.rules...))
}

// compilePattern compiles a rule with Go's RE2 syntax, which is close to
// that of Rust's regex crate used by KumoMTA (see the package doc). The
// Rust constructs that Go would silently read as literal text are
// refused instead.
func compilePattern(p string) (*regexp.Regexp, error) {
	if err := checkRustOnly(p); err != nil {
		return nil, err
	}
	return regexp.Compile(p)
}

// checkRustOnly reports Rust regex syntax that Go accepts with another
// meaning: the word anchors \< and \>, class set operations (&&, --, ~~
// inside brackets) and the repetition {,n}.
func checkRustOnly(p string) error {
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\':
			if i+1 < len(p) && (p[i+1] == '<' || p[i+1] == '>') && !inClass {
				return fmt.Errorf("Rust word anchor \\%c is not supported (Go reads it as a literal); use \\b", p[i+1])
			}
			i++ // skip the escaped character
		case inClass:
			switch {
			case c == ']':
				inClass = false
			case i+1 < len(p) && p[i+1] == c && (c == '&' || c == '~' || c == '-') && i+2 < len(p) && p[i+2] != ']':
				return fmt.Errorf("Rust class set operation %q is not supported (Go reads it as literal characters)", p[i:i+2])
			}
		case c == '[':
			inClass = true
			// A ']' right after '[' or '[^' is a literal member.
			if i+1 < len(p) && p[i+1] == '^' {
				i++
			}
			if i+1 < len(p) && p[i+1] == ']' {
				i++
			}
		case c == '{' && i+1 < len(p) && p[i+1] == ',':
			j := i + 2
			for j < len(p) && p[j] >= '0' && p[j] <= '9' {
				j++
			}
			if j > i+2 && j < len(p) && p[j] == '}' {
				return fmt.Errorf("repetition %s is not supported (Go reads it as literal text); write {0,%s}", p[i:j+1], p[i+2:j])
			}
		}
	}
	return nil
}

// literalIndex locates TOML string literals by value, to give the line of
// each pattern (BurntSushi/toml does not expose the position of array
// elements).
type literalIndex struct {
	lines map[string][]int // value -> lines of its literals, in order
}

type tomlLiteral struct {
	line int
	raw  string // with its quotes
}

func newLiteralIndex(data []byte) *literalIndex {
	x := &literalIndex{lines: map[string][]int{}}
	for _, l := range scanTOMLStrings(string(data)) {
		if v, ok := literalValue(l.raw); ok {
			x.lines[v] = append(x.lines[v], l.line)
		}
	}
	return x
}

// line returns the line of the first not yet claimed string literal whose
// value is s, or 0.
func (x *literalIndex) line(s string) int {
	l := x.lines[s]
	if len(l) == 0 {
		return 0
	}
	x.lines[s] = l[1:]
	return l[0]
}

// literalValue decodes a TOML string literal.
func literalValue(raw string) (string, bool) {
	if len(raw) >= 2 && !strings.HasPrefix(raw, "'''") && !strings.HasPrefix(raw, `"""`) {
		inner := raw[1 : len(raw)-1]
		if raw[0] == '\'' && raw[len(raw)-1] == '\'' {
			return inner, true
		}
		if raw[0] == '"' && raw[len(raw)-1] == '"' && !strings.Contains(inner, `\`) {
			return inner, true
		}
	}
	var v struct{ V string }
	if _, err := toml.Decode("V = "+raw, &v); err != nil {
		return "", false
	}
	return v.V, true
}

// scanTOMLStrings returns the string literals of a TOML document (basic,
// literal and their multi-line forms) with the line each starts on,
// skipping comments.
func scanTOMLStrings(s string) []tomlLiteral {
	var out []tomlLiteral
	line := 1
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], `"""`), strings.HasPrefix(s[i:], `'''`):
			q := s[i : i+3]
			j := i + 3
			for j < len(s) && !strings.HasPrefix(s[j:], q) {
				if q[0] == '"' && s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+3, len(s))
			for j < len(s) && s[j] == q[0] { // up to two quotes may end the content
				j++
			}
			out = append(out, tomlLiteral{line: line, raw: s[i:j]})
			line += strings.Count(s[i:j], "\n")
			i = j
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(s) && s[j] != c && s[j] != '\n' {
				if c == '"' && s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(s))
			out = append(out, tomlLiteral{line: line, raw: s[i:j]})
			i = j
		default:
			i++
		}
	}
	return out
}
