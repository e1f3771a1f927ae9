package bounce

import (
	"bytes"
	"fmt"
	"math/bits"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mtakit/mtakit/mta/logs"
)

// Classifier maps SMTP responses to bounce classes using an ordered list
// of regular-expression rules, as KumoMTA's bounce classifier does. It is
// immutable once built and safe for concurrent use. A nil *Classifier
// classifies everything as Uncategorized.
type Classifier struct {
	source  []Rule         // the rules as loaded
	rules   []compiledRule // the rules as run (see newClassifier)
	matcher *acMatcher
	words   int // len of the needle bitset, in uint64s

	needles     [][]byte  // by needle id, folded
	needleRules [][]int32 // needle id -> rules whose primary set holds it
	always      []uint64  // bitset of rules with no needle condition
}

// compiledRule is one regex of a rules file (or one branch of it), with
// its class.
type compiledRule struct {
	class   string
	pattern string // the whole rule, as written
	origin  string // "file:line" or "" (for diagnostics)

	// Prefilter: see prefilter.go. Every conjunct must have a needle in
	// the line; the primary set, one of them, is used to find candidate
	// rules and match windows.
	positions []byteSet
	conjuncts [][]maskWord
	primary   []int32 // needle ids of the primary set
	before    int     // bounds of a match around a primary needle (-1:
	after     int     // unbounded); see need

	// The regexps, compiled on first use (see ruleRegexps).
	branch   string // this rule's expression (the whole rule or a branch)
	fast     string // branch, or its lowerRewrite form when lowered
	lowered  bool   // fast is meant for the folded line
	windowed bool   // matches may run variants on windows
	rx       *ruleRegexps
}

// ruleRegexps are the compiled regexps of a compiledRule: re for any
// line (the expression as written), and for ASCII lines full, to run on
// a whole line, and the variants, to run on a window around a needle
// (see matches), indexed by variantIndex (nil when not windowed). full
// and the variants are the fast form (lowered or not).
type ruleRegexps struct {
	once     sync.Once
	re       *regexp.Regexp
	full     *regexp.Regexp
	lowered  bool // full and variants run on the folded line
	variants []*regexp.Regexp
}

// regexps returns r's compiled regexps, compiling them on first use. The
// patterns compiled here are derived from one that compiled when the
// rule was loaded; should one fail all the same, the rule falls back to
// its loaded form.
func (r *compiledRule) regexps() *ruleRegexps {
	x := r.rx
	x.once.Do(func() {
		if x.re == nil {
			re, err := regexp.Compile(r.branch)
			if err != nil {
				re = regexp.MustCompile(r.pattern) // compiled at load time
			}
			x.re = re
		}
		x.full = x.re
		if r.lowered {
			re, err := regexp.Compile(r.fast)
			if err != nil {
				return // the loaded form, on the line, not windowed
			}
			x.full, x.lowered = re, true
		}
		if !r.windowed {
			return
		}
		variants := make([]*regexp.Regexp, 4)
		for _, leftCtx := range []bool{false, true} {
			left := ""
			if r.before >= 0 {
				// The match starts in the first before+1 bytes of the
				// window, after its context byte when it has one.
				from := 0
				if leftCtx {
					from = 1
				}
				left = fmt.Sprintf(`\A(?s:.){%d,%d}`, from, r.before+1)
			} else if leftCtx {
				continue // an unbounded window always starts at 0
			}
			for _, rightCtx := range []bool{false, true} {
				right := ""
				if rightCtx {
					right = `(?s:.)`
				}
				re, err := regexp.Compile(left + `(?:` + r.fast + `)` + right)
				if err != nil {
					return // not windowed
				}
				variants[variantIndex(leftCtx, rightCtx)] = re
			}
		}
		x.variants = variants
	})
	return x
}

// variantIndex indexes compiledRule.variants: leftCtx when the window
// starts after the start of the line, rightCtx when it ends before its
// end.
func variantIndex(leftCtx, rightCtx bool) int {
	i := 0
	if leftCtx {
		i += 2
	}
	if rightCtx {
		i++
	}
	return i
}

// maskWord is a part of a needle set: the needles whose bits are set in
// mask, in word w of the needle bitset.
type maskWord struct {
	w    int32
	mask uint64
}

// maxAnchoredBefore is the largest before bound for which a window's
// regexp is anchored at its start (see matches).
const maxAnchoredBefore = 200

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
	return slices.Clone(c.source)
}

// Len returns the number of rules.
func (c *Classifier) Len() int {
	if c == nil {
		return 0
	}
	return len(c.source)
}

// newClassifier derives the prefilters of rules and builds the needle
// matcher. The regexps are already compiled and the patterns valid.
//
// A rule whose expression is an alternation at the top (a|b|c) is run as
// one rule per branch, with the same class, in order: the first match
// gives the same class, and each branch gets prefilter conditions and
// match windows of its own, usually much tighter than those of the whole.
func newClassifier(rules []pendingRule) *Classifier {
	c := &Classifier{source: make([]Rule, len(rules))}
	ids := map[string]int32{}
	var needles []string
	intern := func(set []string) []int32 {
		out := make([]int32, 0, len(set))
		for _, n := range set {
			id, ok := ids[n]
			if !ok {
				id = int32(len(needles))
				ids[n] = id
				needles = append(needles, n)
				c.needleRules = append(c.needleRules, nil)
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
		return out
	}
	for i, pr := range rules {
		c.source[i] = Rule{Class: pr.class, Pattern: pr.pattern, Origin: pr.origin}
		parsed, err := syntax.Parse(pr.pattern, syntax.Perl)
		if err != nil { // cannot happen: pr.re compiled
			c.rules = append(c.rules, compiledRule{class: pr.class, pattern: pr.pattern, origin: pr.origin,
				branch: pr.pattern, fast: pr.pattern, rx: &ruleRegexps{re: pr.re}})
			continue
		}
		branches := []*syntax.Regexp{parsed}
		top := parsed
		for top.Op == syntax.OpCapture {
			top = top.Sub[0]
		}
		if top.Op == syntax.OpAlternate && len(top.Sub) > 1 {
			branches = top.Sub
		}
		for _, br := range branches {
			cr := compiledRule{class: pr.class, pattern: pr.pattern, origin: pr.origin,
				branch: pr.pattern, rx: &ruleRegexps{}}
			if len(branches) > 1 {
				cr.branch = br.String()
			} else {
				cr.rx.re = pr.re
			}
			compileRule(&cr, br, intern)
			c.rules = append(c.rules, cr)
		}
	}
	c.always = make([]uint64, (len(c.rules)+63)/64)
	for i := range c.rules {
		cr := &c.rules[i]
		if cr.primary == nil {
			c.always[i>>6] |= 1 << (i & 63)
		}
		for _, id := range cr.primary {
			c.needleRules[id] = append(c.needleRules[id], int32(i))
		}
	}
	c.matcher = newACMatcher(needles)
	c.words = (len(needles) + 63) / 64
	c.needles = make([][]byte, len(needles))
	for i, n := range needles {
		c.needles[i] = []byte(n)
	}
	return c
}

// compileRule derives the prefilter, windows and fast variants of cr,
// whose expression parses to parsed (which it rewrites).
func compileRule(cr *compiledRule, parsed *syntax.Regexp, intern func([]string) []int32) {
	positions, conj := analyzeRule(parsed.Simplify())
	cr.positions = positions
	best := -1
	for j, n := range conj {
		n = simplifyNeedles(truncateNeedles(simplifyNeedles(n), maxNeedleLen))
		if n.before > maxAnchoredBefore {
			n.before = -1
		}
		conj[j] = n
		cr.conjuncts = append(cr.conjuncts, masks(intern(n.set)))
		// The primary set: the one giving the fewest possible match
		// starts, then the shortest windows.
		if best < 0 || windowCost(n) < windowCost(conj[best]) {
			best = j
		}
	}
	if best >= 0 {
		cr.primary = intern(conj[best].set)
		cr.before, cr.after = conj[best].before, conj[best].after
	}
	anchored := positions != nil || anchoredAtStart(parsed)

	cr.fast = cr.branch
	if lowerRewrite(parsed) {
		cr.fast = parsed.String()
		cr.lowered = true
	}
	// Anchored rules are fast as they are: Go's regexp tries them at the
	// start of the text only.
	cr.windowed = cr.primary != nil && !anchored && (cr.before >= 0 || cr.after >= 0)
}

// windowCost orders needs by the work a window costs: the number of
// possible match starts (before+1) first, then the window's length.
func windowCost(n need) int {
	const unbounded = 1 << 10
	b, a := n.before, n.after
	if b < 0 {
		b = unbounded
	}
	if a < 0 {
		a = unbounded
	}
	return b<<11 + a
}

// masks groups needle ids by bitset word.
func masks(ids []int32) []maskWord {
	var out []maskWord
	for _, id := range ids {
		w, bit := id>>6, uint64(1)<<(id&63)
		if k := slices.IndexFunc(out, func(m maskWord) bool { return m.w == w }); k >= 0 {
			out[k].mask |= bit
		} else {
			out = append(out, maskWord{w: w, mask: bit})
		}
	}
	return out
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
	var foldArr [384]byte
	folded, ascii := foldLine(foldArr[:0], line)

	// Which needles occur, and so which rules are candidates.
	var presentArr [32]uint64
	present := presentArr[:0]
	if c.words <= len(presentArr) {
		present = presentArr[:c.words]
	} else {
		present = make([]uint64, c.words)
	}
	c.matcher.scan(folded, present)
	var candArr [8]uint64
	cand := candArr[:0]
	if len(c.always) <= len(candArr) {
		cand = candArr[:len(c.always)]
	} else {
		cand = make([]uint64, len(c.always))
	}
	copy(cand, c.always)
	for w, word := range present {
		for word != 0 {
			id := w<<6 | bits.TrailingZeros64(word)
			word &= word - 1
			for _, r := range c.needleRules[id] {
				cand[r>>6] |= 1 << (r & 63)
			}
		}
	}

	var ls lineStrings
	for w, word := range cand {
		for word != 0 {
			i := w<<6 | bits.TrailingZeros64(word)
			word &= word - 1
			r := &c.rules[i]
			if r.admits(folded, present) && c.matches(r, line, folded, ascii, present, &ls) {
				return r.class
			}
		}
	}
	return Uncategorized
}

// admits reports whether the folded line, in which the needles in present
// occur, meets the rule's prefilter.
func (r *compiledRule) admits(folded []byte, present []uint64) bool {
	if r.positions != nil {
		if len(folded) < len(r.positions) {
			return false
		}
		for i := range r.positions {
			if !r.positions[i].has(folded[i]) {
				return false
			}
		}
	}
	for _, set := range r.conjuncts {
		found := false
		for _, m := range set {
			if present[m.w]&m.mask != 0 {
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

// lineStrings holds a classification's line, and its folded form, as
// strings for the regexps, converted on first use. (It holds no slices:
// the line buffers live on the caller's stack.)
type lineStrings struct {
	s, low           string
	haveS, haveLower bool
}

func (ls *lineStrings) original(line []byte) string {
	if !ls.haveS {
		ls.s, ls.haveS = string(line), true
	}
	return ls.s
}

func (ls *lineStrings) lowered(folded []byte) string {
	if !ls.haveLower {
		ls.low, ls.haveLower = string(folded), true
	}
	return ls.low
}

// matches reports whether r's regexp matches the line.
//
// Every match of a rule with a primary needle set contains an occurrence
// of one of those needles, starts at most r.before bytes ahead of it and
// ends at most r.after bytes past it. So on an ASCII line the regexp
// only runs on a window around each occurrence, anchored so that the
// match starts within before+1 bytes of the window's start. The window
// is widened by one byte on each side that is not an end of the line,
// and the variant used requires that byte of context before and after
// the match: the bytes an assertion inside the match (\b, ^, $) can look
// at are then the same in the window as in the line, so a match in a
// window is a match in the line, and every match in the line is found
// in the window of the needle occurrence it contains.
func (c *Classifier) matches(r *compiledRule, line, folded []byte, ascii bool, present []uint64, ls *lineStrings) bool {
	rx := r.regexps()
	if !ascii {
		return rx.re.MatchString(ls.original(line))
	}
	text := func() string {
		if rx.lowered {
			return ls.lowered(folded)
		}
		return ls.original(line)
	}
	if rx.variants == nil {
		return rx.full.MatchString(text())
	}
	n := len(line)
	runs := 0
	for _, id := range r.primary {
		if present[id>>6]&(1<<(id&63)) == 0 {
			continue
		}
		needle := c.needles[id]
		for off := 0; ; {
			i := bytes.Index(folded[off:], needle)
			if i < 0 {
				break
			}
			p := off + i
			off = p + 1
			if runs++; runs > 8 {
				return rx.full.MatchString(text()) // many occurrences
			}
			a, b := 0, n
			if r.before >= 0 && p-r.before-1 > 0 {
				a = p - r.before - 1
			}
			if r.after >= 0 && p+len(needle)+r.after+1 < n {
				b = p + len(needle) + r.after + 1
			}
			if rx.variants[variantIndex(a > 0, b < n)].MatchString(text()[a:b]) {
				return true
			}
		}
	}
	return false
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
	if strings.IndexAny(s, "\r\n") < 0 {
		return append(buf, s...)
	}
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
