package bounce

import (
	"fmt"
	"testing"
)

func TestDebugDump(t *testing.T) {
	c := DefaultClassifier()
	needles := map[int32]string{}
	_ = needles
	for i, r := range c.rules {
		fmt.Printf("%3d %-20s pos=%d conj=%v  %s\n", i, r.class, len(r.filter.positions), r.filter.conjuncts, r.pattern)
	}
}

func TestDebugRun(t *testing.T) {
	c := DefaultClassifier()
	for _, line := range []string{
		"550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. For more information, go to https://support.google.com/mail/?p=NoSuchUser a1b2c3d4e5si6789012.34 - gsmtp",
		"554 5.0.0 Transaction failed: the remote server said something nobody has a rule for, at some length, just to see",
	} {
		low := []byte{}
		for i := 0; i < len(line); i++ {
			low = append(low, lowerASCII(line[i]))
		}
		present := make([]uint64, c.words)
		c.matcher.scan(low, present)
		for i := range c.rules {
			r := &c.rules[i]
			if r.filter.admits(low, present) {
				fmt.Printf("admit %3d %s %s match=%v\n", i, r.class, r.pattern, r.re.MatchString(line))
			}
		}
	}
}
