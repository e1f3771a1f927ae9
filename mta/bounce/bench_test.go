package bounce

import (
	"testing"
)

// BenchmarkClassify measures Classify with the default rules on typical
// replies: one decided by an early phrase rule, one by a status-code rule
// near the end, one that falls through to the 4xx catch-all, and one
// that no rule matches (the worst case: every rule's prefilter is
// checked). "all" cycles through the whole test table.
func BenchmarkClassify(b *testing.B) {
	c := DefaultClassifier()
	cases := []struct {
		name           string
		code           int
		enhanced, text string
	}{
		{"gmail-nosuchuser", 550, "5.1.1", "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. For more information, go to https://support.google.com/mail/?p=NoSuchUser a1b2c3d4e5si6789012.34 - gsmtp"},
		{"spamhaus", 554, "5.7.1", "Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.5"},
		{"code-only", 550, "5.2.1", ""},
		{"4xx-fallback", 421, "4.7.0", "Try again later, closing connection. (EHLO) a1si2.3 - gsmtp"},
		{"uncategorized", 554, "5.0.0", "Transaction failed: the remote server said something nobody has a rule for, at some length, just to see"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Classify(tc.code, tc.enhanced, tc.text)
			}
		})
	}
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tc := defaultCases[i%len(defaultCases)]
			c.Classify(tc.code, tc.enhanced, tc.text)
			i++
		}
	})
	b.Run("all-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				tc := defaultCases[i%len(defaultCases)]
				c.Classify(tc.code, tc.enhanced, tc.text)
				i++
			}
		})
	})
	// The same lines without the prefilter: every regexp in order, as a
	// plain loop over the rules would do.
	b.Run("all-regexps-only", func(b *testing.B) {
		lines := make([]string, len(defaultCases))
		for i, tc := range defaultCases {
			lines[i] = string(appendLine(nil, tc.code, tc.enhanced, tc.text))
		}
		slowClassify(c, "") // compile the reference rules
		i := 0
		for b.Loop() {
			slowClassify(c, lines[i%len(lines)])
			i++
		}
	})
}

// BenchmarkDefaultClassifierBuild measures compiling the default rules.
func BenchmarkDefaultClassifierBuild(b *testing.B) {
	rules := defaultRules()
	b.ReportAllocs()
	for b.Loop() {
		newClassifier(rules)
	}
}
