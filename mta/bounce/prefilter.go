package bounce

import (
	"regexp/syntax"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file derives, from each rule's parsed regular expression, cheap
// necessary conditions that a response line must meet for the
// expression to match it, so that of the many rules only the one or two
// that can plausibly match are run, and only on the part of the line
// where they can match.
//
// The conditions are stated over the "folded line": the line with one
// byte per character, ASCII letters lowered, the two non-ASCII letters
// whose case folding reaches ASCII (the Kelvin sign and long s) replaced
// by k and s, and every other non-ASCII character (or invalid byte)
// replaced by the placeholder byte 0x80. For a pure ASCII line (SMTP
// replies almost always are) the folded line is the lowered line, with
// the same offsets.
//
// Three kinds of condition are derived:
//
//   - For an expression anchored at the start of the text (^ or \A), the
//     sets of bytes allowed at each of its first positions, for as long
//     as the expression's length is fixed: ^5\d\d [45]\.1\.1 gives
//     [5][0-9][0-9][ ][45][.][1][.][1][ ].
//   - Conjunctions of "one of these literals must occur" sets ("needles"),
//     following the idea of Russ Cox's trigram index (codesearch):
//     (?i)mailbox (is )?full requires one of {"mailbox full",
//     "mailbox is full"}. All needles of all rules are found in one pass
//     over the folded line by an Aho-Corasick automaton.
//   - For each needle set, bounds on how far a match can extend before
//     and after the needle, so the expression need only run on a window
//     around each occurrence (see Classifier.matches).

const (
	maxExactSet   = 16 // largest set of strings tracked for a sub-expression
	maxNeedleSet  = 32 // largest "one of" set kept as a condition
	maxConjuncts  = 3  // most "one of" sets kept per rule
	minNeedleLen  = 3  // shortest literal worth looking for
	maxPositional = 32 // most leading positions checked for anchored rules
	maxNeedleLen  = 12 // longest needle (longer ones are cut to this)
	placeholder   = 0x80
)

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) add(b byte)       { s[b>>6] |= 1 << (b & 63) }
func (s *byteSet) has(b byte) bool  { return s[b>>6]&(1<<(b&63)) != 0 }
func (s *byteSet) union(t *byteSet) { s[0] |= t[0]; s[1] |= t[1]; s[2] |= t[2]; s[3] |= t[3] }

// full reports whether s holds every byte the folded line can contain.
func (s *byteSet) full() bool {
	return s[0] == ^uint64(0) && s[1]|(0x3ffffff<<1) == ^uint64(0) && s.has(placeholder)
}

// addRange adds to s the folded-line bytes of the characters in [lo, hi].
func (s *byteSet) addRange(lo, hi rune) {
	for r := lo; r <= min(hi, utf8.RuneSelf-1); r++ {
		s.add(lowerASCII(byte(r)))
	}
	if hi >= utf8.RuneSelf {
		s.add(placeholder)
		for _, r := range foldsToASCII {
			if lo <= r && r <= hi {
				s.add(byte(asciiFold(r)))
			}
		}
	}
}

// foldsToASCII are the non-ASCII runes whose simple case folding orbit
// holds an ASCII letter.
var foldsToASCII = [...]rune{'\u017F', '\u212A'}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
}

// asciiFold returns the lowered ASCII member of r's case folding orbit,
// or 0 if there is none.
func asciiFold(r rune) rune {
	if r < utf8.RuneSelf {
		return rune(lowerASCII(byte(r)))
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return rune(lowerASCII(byte(f)))
		}
	}
	return 0
}

// foldLine appends the folded form of line to dst. ascii reports whether
// line was pure ASCII (folded and original offsets then agree).
func foldLine(dst, line []byte) (out []byte, ascii bool) {
	start := len(dst)
	dst = slices.Grow(dst, len(line))[:start+len(line)]
	fold := dst[start:]
	for i, b := range line {
		if b >= utf8.RuneSelf {
			return foldNonASCII(dst[:start+i], line[i:]), false
		}
		fold[i] = lowerTable[b]
	}
	return dst, true
}

func foldNonASCII(dst, line []byte) []byte {
	for i := 0; i < len(line); {
		b := line[i]
		if b < utf8.RuneSelf {
			dst = append(dst, lowerTable[b])
			i++
			continue
		}
		r, size := utf8.DecodeRune(line[i:])
		i += size
		if f := asciiFold(r); f != 0 {
			dst = append(dst, byte(f))
		} else {
			dst = append(dst, placeholder)
		}
	}
	return dst
}

// lowerTable maps each ASCII byte to its lower case.
var lowerTable = func() (t [128]byte) {
	for i := range t {
		t[i] = lowerASCII(byte(i))
	}
	return t
}()

// need is a "one of these needles occurs" condition, with bounds on the
// extent of a match around the occurrence: a match starts at most before
// bytes ahead of the needle's start and ends at most after bytes past its
// end. A bound of -1 means unbounded.
type need struct {
	set           []string
	before, after int
}

// analyzeRule derives the conditions for a parsed, simplified regexp.
func analyzeRule(re *syntax.Regexp) (positions []byteSet, conjuncts []need) {
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
	for _, c := range analyze(re).reqs {
		if usableNeedles(c.set) {
			conjuncts = append(conjuncts, c)
		}
	}
	// Keep the most selective few: longest shortest-needle first, then
	// fewest needles.
	slices.SortStableFunc(conjuncts, func(a, b need) int {
		if d := minLen(b.set) - minLen(a.set); d != 0 {
			return d
		}
		return len(a.set) - len(b.set)
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

func maxLenOf(set []string) int {
	m := 0
	for _, s := range set {
		m = max(m, len(s))
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

// positional returns the byte sets that the first bytes of the folded
// form of any match of re must belong to, and whether every match of re
// is exactly len(sets) characters long, so that what follows re in a
// concatenation starts at a known position.
func positional(re *syntax.Regexp) (sets []byteSet, complete bool) {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine,
		syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return nil, true
	case syntax.OpLiteral:
		sets = make([]byteSet, len(re.Rune))
		for i, r := range re.Rune {
			sets[i].addRange(r, r)
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
		s.addRange(0, unicode.MaxRune)
		s[0] &^= 1 << '\n'
		return []byteSet{s}, true
	case syntax.OpAnyChar:
		var s byteSet
		s.addRange(0, unicode.MaxRune)
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
		for i, sub := range re.Sub {
			s, c := positional(sub)
			if i == 0 {
				sets, complete = s, c
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
// folded space.
type litInfo struct {
	// exact is the set of all strings the sub-expression can match,
	// or nil when that is unknown or too large.
	exact []string
	// reqs is a conjunction: any match satisfies every need.
	reqs []need
	// maxLen is the greatest length of a match, in characters, or -1.
	maxLen int
}

// reqFrom turns an exact set into a needle set, or nil when it holds the
// empty string.
func reqFrom(set []string) []string {
	if set == nil || slices.Contains(set, "") {
		return nil
	}
	return set
}

func exactInfo(set []string) litInfo {
	info := litInfo{exact: set, maxLen: maxLenOf(set)}
	if r := reqFrom(set); r != nil {
		info.reqs = []need{{set: r}}
	}
	return info
}

// betterNeed returns the more selective of two needs (a nil set = none).
func betterNeed(a, b need) need {
	switch {
	case a.set == nil:
		return b
	case b.set == nil:
		return a
	case minLen(a.set) != minLen(b.set):
		if minLen(a.set) > minLen(b.set) {
			return a
		}
		return b
	case len(b.set) < len(a.set):
		return b
	}
	return a
}

func bestOf(reqs []need) need {
	var best need
	for _, r := range reqs {
		best = betterNeed(best, r)
	}
	return best
}

// addBound adds lengths where -1 is unbounded.
func addBound(a, b int) int {
	if a < 0 || b < 0 {
		return -1
	}
	return a + b
}

// maxBound is the larger of two bounds where -1 is unbounded.
func maxBound(a, b int) int {
	if a < 0 || b < 0 {
		return -1
	}
	return max(a, b)
}

func analyze(re *syntax.Regexp) litInfo {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine,
		syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return litInfo{exact: []string{""}}
	case syntax.OpLiteral:
		return analyzeLiteral(re.Rune)
	case syntax.OpCharClass:
		return analyzeClass(re.Rune)
	case syntax.OpCapture:
		return analyze(re.Sub[0])
	case syntax.OpQuest:
		x := analyze(re.Sub[0])
		if x.exact != nil && len(x.exact) < maxExactSet {
			return litInfo{exact: union(x.exact, []string{""}), maxLen: x.maxLen}
		}
		return litInfo{maxLen: x.maxLen}
	case syntax.OpStar, syntax.OpPlus:
		x := analyze(re.Sub[0])
		out := litInfo{maxLen: -1}
		if x.maxLen == 0 {
			out.maxLen = 0
		}
		if re.Op == syntax.OpPlus {
			for _, r := range x.reqs {
				out.reqs = append(out.reqs, need{set: r.set, before: -1, after: -1})
			}
		}
		return out
	case syntax.OpRepeat:
		x := analyze(re.Sub[0])
		out := litInfo{maxLen: -1}
		if re.Max >= 0 && x.maxLen >= 0 {
			out.maxLen = x.maxLen * re.Max
		}
		if re.Min >= 1 {
			extra := -1 // the other repetitions, on either side
			if re.Max >= 0 && x.maxLen >= 0 {
				extra = (re.Max - 1) * x.maxLen
			}
			for _, r := range x.reqs {
				out.reqs = append(out.reqs, need{set: r.set, before: addBound(r.before, extra), after: addBound(r.after, extra)})
			}
		}
		return out
	case syntax.OpConcat:
		return analyzeConcat(re.Sub)
	case syntax.OpAlternate:
		return analyzeAlternate(re.Sub)
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return litInfo{maxLen: 1}
	}
	return litInfo{} // OpNoMatch
}

// analyzeLiteral handles a literal string. A character whose folded form
// is the placeholder cannot be a needle character: it splits the literal.
func analyzeLiteral(runes []rune) litInfo {
	var pieces []need
	var cur []byte
	start := 0
	for i, r := range runes {
		f := asciiFold(r)
		if f == 0 {
			if len(cur) > 0 {
				pieces = append(pieces, need{set: []string{string(cur)}, before: start, after: len(runes) - i})
			}
			cur = cur[:0]
			start = i + 1
			continue
		}
		cur = append(cur, byte(f))
	}
	if len(pieces) == 0 && start == 0 {
		return exactInfo([]string{string(cur)})
	}
	if len(cur) > 0 {
		pieces = append(pieces, need{set: []string{string(cur)}, before: start, after: 0})
	}
	return litInfo{reqs: pieces, maxLen: len(runes)}
}

// analyzeClass handles a character class: small classes whose members all
// have an ASCII folded form are exact sets of one-character strings.
func analyzeClass(ranges []rune) litInfo {
	n := 0
	for i := 0; i+1 < len(ranges); i += 2 {
		n += int(ranges[i+1]-ranges[i]) + 1
		if n > maxExactSet*2 {
			return litInfo{maxLen: 1}
		}
	}
	var set []string
	for i := 0; i+1 < len(ranges); i += 2 {
		for r := ranges[i]; r <= ranges[i+1]; r++ {
			f := asciiFold(r)
			if f == 0 {
				return litInfo{maxLen: 1}
			}
			if s := string(f); !slices.Contains(set, s) {
				set = append(set, s)
			}
		}
	}
	if len(set) > maxExactSet {
		return litInfo{maxLen: 1}
	}
	return exactInfo(set)
}

func analyzeConcat(subs []*syntax.Regexp) litInfo {
	infos := make([]litInfo, len(subs))
	for i, sub := range subs {
		infos[i] = analyze(sub)
	}
	// prefix[k] is the longest match of subs[:k], suffix[k] of subs[k:].
	prefix := make([]int, len(subs)+1)
	for k, x := range infos {
		prefix[k+1] = addBound(prefix[k], x.maxLen)
	}
	suffix := make([]int, len(subs)+1)
	for k := len(subs) - 1; k >= 0; k-- {
		suffix[k] = addBound(suffix[k+1], infos[k].maxLen)
	}

	out := litInfo{maxLen: prefix[len(subs)]}
	cur, curStart := []string{""}, 0
	exactOK := true
	flush := func(end int) {
		if r := reqFrom(cur); r != nil {
			out.reqs = append(out.reqs, need{set: r, before: prefix[curStart], after: suffix[end]})
		}
	}
	for k, x := range infos {
		if x.exact != nil {
			if len(cur)*len(x.exact) <= maxExactSet {
				cur = cross(cur, x.exact)
				continue
			}
			flush(k)
			cur, curStart = x.exact, k
			exactOK = false
			continue
		}
		flush(k)
		for _, r := range x.reqs {
			out.reqs = append(out.reqs, need{set: r.set,
				before: addBound(prefix[k], r.before), after: addBound(r.after, suffix[k+1])})
		}
		cur, curStart = []string{""}, k+1
		exactOK = false
	}
	flush(len(subs))
	if exactOK {
		out.exact = cur
	}
	return out
}

func analyzeAlternate(subs []*syntax.Regexp) litInfo {
	var exact []string
	var req need
	exactOK, reqOK := true, true
	maxLen := 0
	for _, sub := range subs {
		x := analyze(sub)
		maxLen = maxBound(maxLen, x.maxLen)
		if exactOK && x.exact != nil {
			exact = union(exact, x.exact)
			exactOK = len(exact) <= maxExactSet
		} else {
			exactOK = false
		}
		if b := bestOf(x.reqs); reqOK && b.set != nil {
			if req.set == nil {
				req = need{set: b.set, before: b.before, after: b.after}
			} else {
				req = need{set: union(req.set, b.set),
					before: maxBound(req.before, b.before), after: maxBound(req.after, b.after)}
			}
			reqOK = len(req.set) <= maxNeedleSet
		} else {
			reqOK = false
		}
	}
	out := litInfo{maxLen: maxLen}
	if !reqOK {
		req = need{}
	}
	if exactOK {
		out.exact = exact
		req = betterNeed(req, need{set: reqFrom(exact)})
	}
	if req.set != nil {
		out.reqs = []need{req}
	}
	return out
}

func cross(a, b []string) []string {
	out := make([]string, 0, len(a)*len(b))
	for _, x := range a {
		for _, y := range b {
			if s := x + y; !slices.Contains(out, s) {
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

// simplifyNeedles drops from a need's set each string that contains
// another member (if the longer one occurs, so does the shorter, so the
// condition is unchanged), widening the bounds by how far a kept string
// can sit inside a dropped one.
func simplifyNeedles(n need) need {
	out := make([]string, 0, len(n.set))
	for i, s := range n.set {
		redundant := false
		for j, t := range n.set {
			if i != j && strings.Contains(s, t) && (len(t) < len(s) || j < i) {
				redundant = true
				break
			}
		}
		if !redundant {
			out = append(out, s)
		}
	}
	slack := 0
	for _, s := range n.set {
		for _, t := range out {
			if strings.Contains(s, t) {
				slack = max(slack, len(s)-len(t))
			}
		}
	}
	return need{set: out, before: addBound(n.before, slack), after: addBound(n.after, slack)}
}

// truncateNeedles shortens the needles of n to at most k bytes: if a
// needle occurs, so does its prefix, at the same place, so the condition
// still holds of every match, and the match then ends at most after plus
// the bytes cut off past the prefix. Short needles keep the automaton
// small and its scan in cache.
func truncateNeedles(n need, k int) need {
	out := make([]string, 0, len(n.set))
	cut := 0
	for _, s := range n.set {
		if len(s) > k {
			cut = max(cut, len(s)-k)
			s = s[:k]
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return need{set: out, before: n.before, after: addBound(n.after, cut)}
}

// lowerRewrite rewrites re, in place, into an expression that matches the
// lowered form of an ASCII line exactly when re matches the line, and
// reports whether that was possible: every literal must be
// case-insensitive or free of ASCII letters, and every class must hold
// both cases of each ASCII letter it holds. Running the rewritten,
// case-sensitive expression on the lowered line is faster in Go's regexp
// than running a case-folding one.
func lowerRewrite(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			for i, r := range re.Rune {
				if f := asciiFold(r); f != 0 {
					re.Rune[i] = f
				}
			}
			re.Flags &^= syntax.FoldCase
			return true
		}
		for _, r := range re.Rune {
			if r < utf8.RuneSelf && unicode.IsLetter(r) {
				return false
			}
		}
		return true
	case syntax.OpCharClass:
		in := func(r rune) bool {
			for i := 0; i+1 < len(re.Rune); i += 2 {
				if re.Rune[i] <= r && r <= re.Rune[i+1] {
					return true
				}
			}
			return false
		}
		for r := 'a'; r <= 'z'; r++ {
			if in(r) != in(r-'a'+'A') {
				return false
			}
		}
		return true
	}
	for _, sub := range re.Sub {
		if !lowerRewrite(sub) {
			return false
		}
	}
	return true
}

// acMatcher finds which of a set of needles occur in a text, in one pass
// (Aho-Corasick, as a DFA over an alphabet compressed to the bytes that
// occur in needles). States are numbered breadth-first, so the shallow
// states that most of a scan stays in are close together in memory, and
// stored in 16 bits when there are few enough of them.
type acMatcher struct {
	class   [256]uint8 // byte -> alphabet index; 0 for bytes in no needle
	stride  int        // alphabet size, including class 0
	delta16 []uint16   // state*stride+class -> next state, or:
	delta32 []uint32   // the same, for more than 65536 states
	own     [][]int32  // needles ending at this state
	link    []uint32   // nearest proper suffix state with needles, or 0
	report  []bool     // own or link non-empty
}

// newACMatcher builds a matcher for needles. Needles with non-ASCII bytes
// are left out: they can never occur in a folded line.
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
	stride := m.stride
	// The trie, with its edges in a dense table.
	delta := make([]int32, stride)
	own := [][]int32{nil}
	for id, n := range needles {
		if n == "" || !isASCII(n) {
			continue
		}
		s := int32(0)
		for i := 0; i < len(n); i++ {
			c := int(m.class[n[i]])
			next := delta[int(s)*stride+c]
			if next == 0 {
				next = int32(len(own))
				own = append(own, nil)
				delta = append(delta, make([]int32, stride)...)
				delta[int(s)*stride+c] = next
			}
			s = next
		}
		own[s] = append(own[s], int32(id))
	}
	// Breadth-first: failure links, completing the DFA, and the new
	// numbering (order[i] is the old number of state i).
	states := len(own)
	fail := make([]int32, states)
	link := make([]int32, states)
	order := make([]int32, 1, states)
	for c := 1; c < stride; c++ {
		if v := delta[c]; v != 0 {
			order = append(order, v) // fail[v] = 0
		}
	}
	for q := 1; q < len(order); q++ {
		u := order[q]
		f := fail[u]
		if len(own[f]) > 0 {
			link[u] = f
		} else {
			link[u] = link[f]
		}
		// Until its row is processed, here and once, the non-zero
		// entries of a state's row are exactly its trie edges.
		for c := 1; c < stride; c++ {
			i := int(u)*stride + c
			if v := delta[i]; v != 0 {
				fail[v] = delta[int(f)*stride+c]
				order = append(order, v)
			} else {
				delta[i] = delta[int(f)*stride+c]
			}
		}
	}
	renum := make([]uint32, states)
	for i, old := range order {
		renum[old] = uint32(i)
	}
	m.own = make([][]int32, states)
	m.link = make([]uint32, states)
	m.report = make([]bool, states)
	if states <= 1<<16 {
		m.delta16 = make([]uint16, states*stride)
	} else {
		m.delta32 = make([]uint32, states*stride)
	}
	for i, old := range order {
		m.own[i] = own[old]
		m.link[i] = renum[link[old]]
		m.report[i] = len(own[old]) > 0 || link[old] != 0
		for c := range stride {
			next := renum[delta[int(old)*stride+c]]
			if m.delta16 != nil {
				m.delta16[i*stride+c] = uint16(next)
			} else {
				m.delta32[i*stride+c] = next
			}
		}
	}
	return m
}

// scan marks in present (a bitset indexed by needle id) every needle that
// occurs in text.
func (m *acMatcher) scan(text []byte, present []uint64) {
	s := uint32(0)
	for _, b := range text {
		if m.delta16 != nil {
			s = uint32(m.delta16[int(s)*m.stride+int(m.class[b])])
		} else {
			s = m.delta32[int(s)*m.stride+int(m.class[b])]
		}
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
