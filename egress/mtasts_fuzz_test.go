package egress_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
)

// FuzzParseMTASTSPolicy checks that the policy parser never panics, that
// what it accepts is well formed, and that a policy written back out
// parses to the same policy.
func FuzzParseMTASTSPolicy(f *testing.F) {
	for _, s := range []string{
		"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n",
		"version: STSv1\r\nmode: testing\r\nmx: MX.example.com.\r\nmax_age: 86400",
		"version: STSv1\nmode: none\nmax_age: 0\n",
		"version:STSv1\nmode:enforce\nmx:*.a\nmax_age:99999999999\nx: y: z\n",
		"mode: enforce\n\n\nversion: STSv1\nmax_age: 1\nmx: a\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		p, err := egress.ParseMTASTSPolicy(text)
		if err != nil {
			return
		}
		switch p.Mode {
		case egress.MTASTSEnforce, egress.MTASTSTesting:
			if len(p.MX) == 0 {
				t.Fatalf("mode %s without mx", p.Mode)
			}
		case egress.MTASTSNone:
		default:
			t.Fatalf("mode %q", p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > egress.MTASTSMaxAge || p.MaxAge%time.Second != 0 {
			t.Fatalf("max_age %v", p.MaxAge)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "version: STSv1\nmode: %s\nmax_age: %d\n", p.Mode, p.MaxAge/time.Second)
		for _, mx := range p.MX {
			if mx != strings.ToLower(mx) || strings.HasSuffix(mx, ".") {
				t.Fatalf("pattern %q not normalised", mx)
			}
			if host, ok := strings.CutPrefix(mx, "*."); ok {
				if !p.Permits("x." + host) {
					t.Fatalf("%q does not permit x.%s", mx, host)
				}
			} else if !p.Permits(mx) {
				t.Fatalf("%q does not permit itself", mx)
			}
			fmt.Fprintf(&b, "mx: %s\n", mx)
		}
		q, err := egress.ParseMTASTSPolicy(b.String())
		if err != nil {
			t.Fatalf("round trip of %q: %v", b.String(), err)
		}
		if q.Mode != p.Mode || q.MaxAge != p.MaxAge || strings.Join(q.MX, "\n") != strings.Join(p.MX, "\n") {
			t.Fatalf("round trip: %+v != %+v", q, p)
		}
	})
}
