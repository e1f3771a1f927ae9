package bounce

import (
	"regexp"
	"regexp/syntax"
	"strconv"
	"unicode/utf8"

	"github.com/mtakit/mtakit/mta/logs"
)

// Classifier maps SMTP responses to bounce classes using an ordered list
// of regular-expression rules, as KumoMTA's bounce classifier does. It is
// immutable once built and safe for concurrent use. A nil *Classifier
// classifies everything as Uncategorized.
type Classifier struct {
	rules   []compiledRule
	matcher *acMatcher
	words   int // len of the needle bitset, in uint64s
}

// compiledRule is one regex of a rules file, with its class.
type compiledRule struct {
	class   string
	re      *regexp.Regexp
	filter  prefilter
	origin  string // "file:line" or "" (for diagnostics)
	pattern string
}

// Rule describes one rule of a Classifier, for inspection.
type Rule struct {
	Class   string // the class the rule assigns
	Pattern string // the regular expression, as written in its file
	Origin  string // "file:line" where the rule was defined, if known
}

// Rules returns the classifier's rules in precedence order.
func (c *Classifier) Rules() []Rule {
	if c == nil {
		return nil
	}
	out := make([]Rule, len(c.rules))
	for i, r := range c.rules {
		out[i] = Rule{Class: r.class, Pattern: r.pattern, Origin: r.origin}
	}
	return out
}

// Len returns the number of rules.
func (c *Classifier) Len() int {
	if c == nil {
		return 0
	}
	return len(c.rules)
}

// newClassifier compiles the prefilters of rules and builds the needle
// matcher. The regexps are already compiled and the patterns valid.
func newClassifier(rules []pendingRule) *Classifier {
	c := &Classifier{rules: make([]compiledRule, len(rules))}
	ids := map[string]int32{}
	var needles []string
	for i, pr := range rules {
		cr := compiledRule{class: pr.class, re: pr.re, origin: pr.origin, pattern: pr.pattern}
		if parsed, err := syntax.Parse(pr.pattern, syntax.Perl); err == nil {
			positions, conj := analyzeRule(parsed.Simplify())
			cr.filter.positions = positions
			for _, set := range conj {
				set = simplifyNeedles(set)
				idset := make([]int32, 0, len(set))
				for _, n := range set {
					id, ok := ids[n]
					if !ok {
						id = int32(len(needles))
						ids[n] = id
						needles = append(needles, n)
					}
					idset = append(idset, id)
				}
				cr.filter.conjuncts = append(cr.filter.conjuncts, idset)
			}
		}
		c.rules[i] = cr
	}
	c.matcher = newACMatcher(needles)
	c.words = (len(needles) + 63) / 64
	return c
}

// Classify returns the bounce class of an SMTP response: code is the
// reply code (550), enhanced the RFC 3463 enhanced status code ("5.1.1",
// or "" if the reply had none) and text the rest of the reply, which may
// span lines. It returns Uncategorized when no rule matches.
//
// Like KumoMTA, it matches the rules against the response as one line,
// "CODE ENHANCED TEXT" ("550 5.1.1 user unknown"), or "CODE TEXT" when
// there is no enhanced code, with each line break in text replaced by a
// space. The first rule that matches, in the order the rules were loaded,
// decides the class.
func (c *Classifier) Classify(code int, enhanced, text string) string {
	if c == nil || len(c.rules) == 0 {
		return Uncategorized
	}
	var arr [384]byte
	buf := appendLine(arr[:0], code, enhanced, text)
	return c.classify(buf)
}

// ClassifyLine returns the bounce class of a response already written as
// one line in the form Classify describes. It is KumoMTA's
// BounceClassifier::classify_str.
func (c *Classifier) ClassifyLine(line string) string {
	if c == nil || len(c.rules) == 0 {
		return Uncategorized
	}
	var arr [384]byte
	return c.classify(append(arr[:0], line...))
}

// ClassifyResponse returns the bounce class of a log record's response.
func (c *Classifier) ClassifyResponse(r logs.Response) string {
	if c == nil || len(c.rules) == 0 {
		return Uncategorized
	}
	var arr [384]byte
	buf := strconv.AppendInt(arr[:0], int64(r.Code), 10)
	buf = append(buf, ' ')
	if e := r.EnhancedCode; e != nil {
		buf = appendEnhanced(buf, e.Class, e.Subject, e.Detail)
	}
	buf = appendSingleLine(buf, r.Content)
	return c.classify(buf)
}

// ClassifyRecord sets rec.BounceClassification from rec.Response when
// KumoMTA would classify a record of its type (see Classifiable), and
// leaves it unchanged otherwise.
func (c *Classifier) ClassifyRecord(rec *logs.Record) {
	if Classifiable(rec.Type) {
		rec.BounceClassification = c.ClassifyResponse(rec.Response)
	}
}

// classify runs the rules over line. line must not be retained: it may
// live on the caller's stack.
func (c *Classifier) classify(line []byte) string {
	var lowArr [384]byte
	low := lowArr[:0]
	if len(line) > len(lowArr) {
		low = make([]byte, 0, len(line))
	}
	ascii := true
	for _, b := range line {
		if b >= utf8.RuneSelf {
			ascii = false
			break
		}
		low = append(low, lowerASCII(b))
	}
	if !ascii {
		s := string(line)
		for i := range c.rules {
			if c.rules[i].re.MatchString(s) {
				return c.rules[i].class
			}
		}
		return Uncategorized
	}

	var bitArr [16]uint64
	present := bitArr[:0]
	if c.words <= len(bitArr) {
		present = bitArr[:c.words]
	} else {
		present = make([]uint64, c.words)
	}
	c.matcher.scan(low, present)

	var s string
	converted := false
	for i := range c.rules {
		r := &c.rules[i]
		if !r.filter.admits(low, present) {
			continue
		}
		if !converted {
			s = string(line)
			converted = true
		}
		if r.re.MatchString(s) {
			return r.class
		}
	}
	return Uncategorized
}

// admits reports whether the lowered ASCII line low, in which the needles
// in present occur, meets the prefilter.
func (f *prefilter) admits(low []byte, present []uint64) bool {
	if f.positions != nil {
		if len(low) < len(f.positions) {
			return false
		}
		for i := range f.positions {
			if !f.positions[i].has(low[i]) {
				return false
			}
		}
	}
	for _, set := range f.conjuncts {
		found := false
		for _, id := range set {
			if present[id>>6]&(1<<(id&63)) != 0 {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// appendLine appends the single-line form of a response.
func appendLine(buf []byte, code int, enhanced, text string) []byte {
	buf = strconv.AppendInt(buf, int64(code), 10)
	buf = append(buf, ' ')
	if enhanced != "" {
		if cl, sub, det, ok := parseEnhanced(enhanced); ok {
			buf = appendEnhanced(buf, cl, sub, det)
		} else {
			// Not an enhanced code: KumoMTA would have left it in the
			// content, so it stays in the line as written.
			buf = appendSingleLine(buf, enhanced)
			buf = append(buf, ' ')
		}
	}
	return appendSingleLine(buf, text)
}

// appendEnhanced appends "class.subject.detail ".
func appendEnhanced(buf []byte, class, subject, detail int) []byte {
	buf = strconv.AppendInt(buf, int64(class), 10)
	buf = append(buf, '.')
	buf = strconv.AppendInt(buf, int64(subject), 10)
	buf = append(buf, '.')
	buf = strconv.AppendInt(buf, int64(detail), 10)
	return append(buf, ' ')
}

// parseEnhanced parses an RFC 3463 status code: class "." subject "."
// detail, class one digit, subject and detail one to three digits.
func parseEnhanced(s string) (class, subject, detail int, ok bool) {
	var parts [3]int
	p, digits := 0, 0
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b >= '0' && b <= '9':
			digits++
			if digits > 3 {
				return 0, 0, 0, false
			}
			parts[p] = parts[p]*10 + int(b-'0')
		case b == '.' && digits > 0 && p < 2:
			p++
			digits = 0
		default:
			return 0, 0, 0, false
		}
	}
	if p != 2 || digits == 0 || parts[0] > 9 {
		return 0, 0, 0, false
	}
	return parts[0], parts[1], parts[2], true
}

// appendSingleLine appends s with each CRLF, CR or LF replaced by one
// space, as KumoMTA's remove_line_break does.
func appendSingleLine(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; b {
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				continue
			}
			buf = append(buf, ' ')
		case '\n':
			buf = append(buf, ' ')
		default:
			buf = append(buf, b)
		}
	}
	return buf
}
