package bounce

import (
	"regexp/syntax"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file derives, from each rule's parsed regular expression, cheap
// necessary conditions that a line must meet for the expression to match
// it. Classify checks them before running the expression, so that of the
// many rules only the one or two that can plausibly match are run.
//
// The conditions are stated over the line lowered to ASCII lower case,
// and they are only used when the line is pure ASCII (SMTP replies
// almost always are); for any other line every rule's expression is run.
// Restricting to ASCII makes the reasoning simple and exact: one
// character is one byte, a case-insensitive literal can only meet the
// ASCII members of its case-folding orbit, and a non-ASCII literal can
// never match at all.
//
// Two kinds of condition are derived:
//
//   - For an expression anchored at the start of the text (^ or \A),
//     the sets of bytes allowed at each of its first positions, for as
//     long as the expression's length is fixed: ^5\d\d [45]\.1\.1 gives
//     [5][0-9][0-9][ ][45][.][1][.][1][ ].
//   - Conjunctions of "one of these literals must occur" sets, following
//     the idea of Russ Cox's trigram index (codesearch): (?i)mailbox
//     (is )?full requires one of {"mailbox full", "mailbox is full"}.
//     All literals of all rules are found in one pass over the line by
//     an Aho-Corasick automaton.

const (
	maxExactSet   = 16 // largest set of strings tracked for a sub-expression
	maxNeedleSet  = 32 // largest "one of" set kept as a condition
	maxConjuncts  = 3  // most "one of" sets kept per rule
	minNeedleLen  = 3  // shortest literal worth looking for
	maxPositional = 32 // most leading positions checked for anchored rules
)

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) add(b byte)           { s[b>>6] |= 1 << (b & 63) }
func (s *byteSet) has(b byte) bool      { return s[b>>6]&(1<<(b&63)) != 0 }
func (s *byteSet) union(t *byteSet)     { s[0] |= t[0]; s[1] |= t[1]; s[2] |= t[2]; s[3] |= t[3] }
func (s *byteSet) full() bool           { return s[0]&s[1]&s[2]&s[3] == ^uint64(0) }
func (s *byteSet) addRange(lo, hi rune) { addRuneRange(s, lo, hi) }

// addRuneRange adds to s the lowered ASCII bytes in [lo, hi].
func addRuneRange(s *byteSet, lo, hi rune) {
	if lo >= utf8.RuneSelf {
		return
	}
	hi = min(hi, utf8.RuneSelf-1)
	for r := lo; r <= hi; r++ {
		s.add(lowerASCII(byte(r)))
	}
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
}

// foldRune maps a pattern rune to the byte-string it can meet in a
// lowered ASCII line: ASCII runes are lowered; a case-insensitive
// non-ASCII rune becomes the lowered ASCII member of its folding orbit
// (the Kelvin sign K meets k) if it has one; any other rune stays as it
// is and, being non-ASCII, can never be found in an ASCII line.
func foldRune(r rune, fold bool) rune {
	if r < utf8.RuneSelf {
		return rune(lowerASCII(byte(r)))
	}
	if fold {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < utf8.RuneSelf {
				return rune(lowerASCII(byte(f)))
			}
		}
	}
	return r
}

// prefilter is the set of conditions derived for one rule.
type prefilter struct {
	// positions: when non-nil, the lowered line must have at least
	// len(positions) bytes and byte i must be in positions[i].
	positions []byteSet
	// conjuncts: for each set, at least one of the needles (by index in
	// the classifier's needle table) must occur in the lowered line.
	conjuncts [][]int32
}

// analyzeRule derives the conditions for a parsed, simplified regexp.
// The needle strings are returned as sets; the caller interns them.
func analyzeRule(re *syntax.Regexp) (positions []byteSet, conjuncts [][]string) {
	if anchoredAtStart(re) {
		sets, _ := positional(re)
		if len(sets) > maxPositional {
			sets = sets[:maxPositional]
		}
		// Trailing positions that allow any byte add nothing.
		for len(sets) > 0 && sets[len(sets)-1].full() {
			sets = sets[:len(sets)-1]
		}
		if len(sets) > 0 {
			positions = sets
		}
	}
	info := analyze(re)
	for _, c := range info.reqs {
		if usableNeedles(c) {
			conjuncts = append(conjuncts, c)
		}
	}
	// Keep the most selective few: longest shortest-needle first, then
	// fewest needles.
	slices.SortStableFunc(conjuncts, func(a, b []string) int {
		if d := minLen(b) - minLen(a); d != 0 {
			return d
		}
		return len(a) - len(b)
	})
	if len(conjuncts) > maxConjuncts {
		conjuncts = conjuncts[:maxConjuncts]
	}
	return positions, conjuncts
}

func usableNeedles(set []string) bool {
	return set != nil && len(set) <= maxNeedleSet && minLen(set) >= minNeedleLen
}

func minLen(set []string) int {
	m := -1
	for _, s := range set {
		if m < 0 || len(s) < m {
			m = len(s)
		}
	}
	return m
}

// anchoredAtStart reports whether every match of re starts at the
// beginning of the text.
func anchoredAtStart(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginText:
		return true
	case syntax.OpCapture:
		return anchoredAtStart(re.Sub[0])
	case syntax.OpConcat:
		return len(re.Sub) > 0 && anchoredAtStart(re.Sub[0])
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			if !anchoredAtStart(sub) {
				return false
			}
		}
		return len(re.Sub) > 0
	}
	return false
}

// positional returns the byte sets that the first bytes of any match of
// re (in a lowered ASCII line) must belong to, and whether every match
// of re is exactly len(sets) bytes long, so that what follows re in a
// concatenation starts at a known position.
func positional(re *syntax.Regexp) (sets []byteSet, complete bool) {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine,
		syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return nil, true
	case syntax.OpLiteral:
		fold := re.Flags&syntax.FoldCase != 0
		sets = make([]byteSet, len(re.Rune))
		for i, r := range re.Rune {
			if f := foldRune(r, fold); f < utf8.RuneSelf {
				sets[i].add(byte(f))
			} // else: an empty set, this literal cannot match ASCII
		}
		return sets, true
	case syntax.OpCharClass:
		var s byteSet
		for i := 0; i+1 < len(re.Rune); i += 2 {
			s.addRange(re.Rune[i], re.Rune[i+1])
		}
		return []byteSet{s}, true
	case syntax.OpAnyCharNotNL:
		var s byteSet
		s.addRange(0, utf8.RuneSelf-1)
		s[0] &^= 1 << '\n'
		return []byteSet{s}, true
	case syntax.OpAnyChar:
		var s byteSet
		s.addRange(0, utf8.RuneSelf-1)
		return []byteSet{s}, true
	case syntax.OpCapture:
		return positional(re.Sub[0])
	case syntax.OpConcat:
		for _, sub := range re.Sub {
			s, c := positional(sub)
			sets = append(sets, s...)
			if !c || len(sets) > maxPositional {
				return sets, false
			}
		}
		return sets, true
	case syntax.OpAlternate:
		complete = true
		for i, sub := range re.Sub {
			s, c := positional(sub)
			if i == 0 {
				sets = s
				complete = c
				continue
			}
			if len(s) != len(sets) || !c {
				complete = false
			}
			n := min(len(s), len(sets))
			sets = sets[:n:n]
			for j := range n {
				sets[j].union(&s[j])
			}
		}
		return sets, complete && len(re.Sub) > 0
	case syntax.OpQuest:
		if s, c := positional(re.Sub[0]); c && len(s) == 0 {
			return nil, true
		}
		return nil, false
	case syntax.OpPlus:
		s, _ := positional(re.Sub[0])
		return s, false
	case syntax.OpRepeat:
		if re.Min >= 1 {
			s, _ := positional(re.Sub[0])
			return s, false
		}
	}
	return nil, false
}

// litInfo describes the literal content of a sub-expression, in the
// lowered space of foldRune.
type litInfo struct {
	// exact is the set of all strings the sub-expression can match,
	// or nil when that is unknown or too large.
	exact []string
	// reqs is a conjunction of sets: any match contains, for each set,
	// at least one of its strings. A set containing "" says nothing and
	// is never included.
	reqs [][]string
}

// reqFrom turns an exact set into a requirement, or nil when it holds the
// empty string.
func reqFrom(set []string) []string {
	if set == nil || slices.Contains(set, "") {
		return nil
	}
	return set
}

func exactInfo(set []string) litInfo {
	info := litInfo{exact: set}
	if r := reqFrom(set); r != nil {
		info.reqs = [][]string{r}
	}
	return info
}

// better returns the more selective of two requirement sets (nil = none).
func better(a, b []string) []string {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case minLen(a) != minLen(b):
		if minLen(a) > minLen(b) {
			return a
		}
		return b
	case len(b) < len(a):
		return b
	}
	return a
}

func bestOf(reqs [][]string) []string {
	var best []string
	for _, r := range reqs {
		best = better(best, r)
	}
	return best
}

func analyze(re *syntax.Regexp) litInfo {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine,
		syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return litInfo{exact: []string{""}}
	case syntax.OpLiteral:
		fold := re.Flags&syntax.FoldCase != 0
		b := make([]byte, 0, len(re.Rune))
		for _, r := range re.Rune {
			b = utf8.AppendRune(b, foldRune(r, fold))
		}
		return exactInfo([]string{string(b)})
	case syntax.OpCharClass:
		n := 0
		for i := 0; i+1 < len(re.Rune); i += 2 {
			n += int(re.Rune[i+1]-re.Rune[i]) + 1
			if n > maxExactSet*2 {
				return litInfo{}
			}
		}
		var set []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				s := string(foldRune(r, false))
				if !slices.Contains(set, s) {
					set = append(set, s)
				}
			}
		}
		if len(set) > maxExactSet {
			return litInfo{}
		}
		return exactInfo(set)
	case syntax.OpCapture:
		return analyze(re.Sub[0])
	case syntax.OpQuest:
		x := analyze(re.Sub[0])
		if x.exact != nil && len(x.exact) < maxExactSet {
			return litInfo{exact: union(x.exact, []string{""})}
		}
		return litInfo{}
	case syntax.OpPlus:
		return litInfo{reqs: analyze(re.Sub[0]).reqs}
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return litInfo{reqs: analyze(re.Sub[0]).reqs}
		}
		return litInfo{}
	case syntax.OpConcat:
		return analyzeConcat(re.Sub)
	case syntax.OpAlternate:
		return analyzeAlternate(re.Sub)
	}
	// OpStar, OpAnyChar, OpAnyCharNotNL, OpNoMatch: nothing known.
	return litInfo{}
}

func analyzeConcat(subs []*syntax.Regexp) litInfo {
	var out litInfo
	cur := []string{""}
	exactOK := true
	flush := func() {
		if r := reqFrom(cur); r != nil {
			out.reqs = append(out.reqs, r)
		}
	}
	for _, sub := range subs {
		x := analyze(sub)
		if x.exact != nil {
			if len(cur)*len(x.exact) <= maxExactSet {
				cur = cross(cur, x.exact)
				continue
			}
			flush()
			cur = x.exact
			exactOK = false
			continue
		}
		flush()
		out.reqs = append(out.reqs, x.reqs...)
		cur = []string{""}
		exactOK = false
	}
	flush()
	if exactOK {
		out.exact = cur
	}
	return out
}

func analyzeAlternate(subs []*syntax.Regexp) litInfo {
	var exact, req []string
	exactOK, reqOK := true, true
	for _, sub := range subs {
		x := analyze(sub)
		if exactOK && x.exact != nil {
			exact = union(exact, x.exact)
			exactOK = len(exact) <= maxExactSet
		} else {
			exactOK = false
		}
		if b := bestOf(x.reqs); reqOK && b != nil {
			req = union(req, b)
			reqOK = len(req) <= maxNeedleSet
		} else {
			reqOK = false
		}
	}
	var out litInfo
	if !reqOK {
		req = nil
	}
	if exactOK {
		out.exact = exact
		req = better(req, reqFrom(exact))
	}
	if req != nil {
		out.reqs = [][]string{req}
	}
	return out
}

func cross(a, b []string) []string {
	out := make([]string, 0, len(a)*len(b))
	for _, x := range a {
		for _, y := range b {
			s := x + y
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// simplifyNeedles drops from a "one of" set each string that contains
// another member: if the longer one occurs, so does the shorter, so the
// condition is unchanged.
func simplifyNeedles(set []string) []string {
	out := make([]string, 0, len(set))
	for i, s := range set {
		redundant := false
		for j, t := range set {
			if i != j && strings.Contains(s, t) && (len(t) < len(s) || j < i) {
				redundant = true
				break
			}
		}
		if !redundant {
			out = append(out, s)
		}
	}
	return out
}

// acMatcher finds which of a set of needles occur in a text, in one pass
// (Aho-Corasick, as a DFA over an alphabet compressed to the bytes that
// occur in needles).
type acMatcher struct {
	class  [256]uint8 // byte -> alphabet index; 0 for bytes in no needle
	stride int        // alphabet size, including class 0
	delta  []int32    // state*stride+class -> next state
	own    [][]int32  // needles ending at this state
	link   []int32    // nearest proper suffix state with needles, or 0
	report []bool     // own or link non-empty
}

// newACMatcher builds a matcher for needles. Needles with non-ASCII bytes
// are left out: they can never occur in the ASCII lines it scans.
func newACMatcher(needles []string) *acMatcher {
	m := &acMatcher{stride: 1}
	for _, n := range needles {
		if !isASCII(n) {
			continue
		}
		for i := 0; i < len(n); i++ {
			if m.class[n[i]] == 0 { // at most 128 ASCII classes: no overflow
				m.class[n[i]] = uint8(m.stride)
				m.stride++
			}
		}
	}
	// Trie, with transitions in the dense table from the start.
	m.delta = make([]int32, m.stride)
	m.own = [][]int32{nil}
	for id, n := range needles {
		if n == "" || !isASCII(n) {
			continue
		}
		s := int32(0)
		for i := 0; i < len(n); i++ {
			c := int(m.class[n[i]])
			next := m.delta[int(s)*m.stride+c]
			if next == 0 {
				next = int32(len(m.own))
				m.own = append(m.own, nil)
				m.delta = append(m.delta, make([]int32, m.stride)...)
				m.delta[int(s)*m.stride+c] = next
			}
			s = next
		}
		m.own[s] = append(m.own[s], int32(id))
	}
	// Breadth-first: failure links, completing the DFA.
	states := len(m.own)
	fail := make([]int32, states)
	m.link = make([]int32, states)
	m.report = make([]bool, states)
	queue := make([]int32, 0, states)
	for c := 1; c < m.stride; c++ {
		if v := m.delta[c]; v != 0 {
			queue = append(queue, v) // fail[v] = 0
		}
	}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		f := fail[u]
		if len(m.own[f]) > 0 {
			m.link[u] = f
		} else {
			m.link[u] = m.link[f]
		}
		m.report[u] = len(m.own[u]) > 0 || m.link[u] != 0
		// Until its row is processed, here and once, the non-zero
		// entries of a state's row are exactly its trie edges.
		for c := 1; c < m.stride; c++ {
			i := int(u)*m.stride + c
			if v := m.delta[i]; v != 0 {
				fail[v] = m.delta[int(f)*m.stride+c]
				queue = append(queue, v)
			} else {
				m.delta[i] = m.delta[int(f)*m.stride+c]
			}
		}
	}
	return m
}

// scan marks in present (a bitset indexed by needle id) every needle that
// occurs in text.
func (m *acMatcher) scan(text []byte, present []uint64) {
	s := int32(0)
	for _, b := range text {
		s = m.delta[int(s)*m.stride+int(m.class[b])]
		if m.report[s] {
			for n := s; n != 0; n = m.link[n] {
				for _, id := range m.own[n] {
					present[id>>6] |= 1 << (id & 63)
				}
			}
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
