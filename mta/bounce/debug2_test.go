package bounce

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"testing"
)

var dbgLine = "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. For more information, go to https://support.google.com/mail/?p=NoSuchUser a1b2c3d4e5si6789012.34 - gsmtp"

func BenchmarkDbgRe(b *testing.B) {
	low := strings.ToLower(dbgLine)
	for _, p := range []string{
		`(?i)(user|recipient|mailbox|address|account|addressee|destination|alias)( name)? (does(n.t| not)|did not) exist`,
		`(user|recipient|mailbox|address|account|addressee|destination|alias)( name)? (does(n.t| not)|did not) exist`,
		`(?i)timed? ?out|timeout`,
		`timed? ?out|timeout`,
		`(?i)(sending |source |client |your |the )?(ip|ip address|host|network|netblock|subnet|mail server)( address)? (\[[0-9a-f.:]+\] )?(is |was |has been )?(banned|blocked|blacklisted|blocklisted|denylisted)`,
		`(sending |source |client |your |the )?(ip|ip address|host|network|netblock|subnet|mail server)( address)? (\[[0-9a-f.:]+\] )?(is |was |has been )?(banned|blocked|blacklisted|blocklisted|denylisted)`,
	} {
		re := regexp.MustCompile(p)
		sre, _ := syntax.Parse(p, syntax.Perl)
		prog, _ := syntax.Compile(sre.Simplify())
		fmt.Println(len(prog.Inst), p[:20])
		b.Run(p[:10], func(b *testing.B) {
			for b.Loop() {
				re.MatchString(low)
			}
		})
	}
}
