package egress

import "testing"

func TestSMTPPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"user@example.com":        "user@example.com",
		"first.last+tag@ex.com":   "first.last+tag@ex.com",
		"v@foreign.test@local.te": `"v@foreign.test"@local.te`,
		`a"b\c@ex.com`:            `"a\"b\\c"@ex.com`,
		"two words@ex.com":        `"two words"@ex.com`,
		".lead@ex.com":            `".lead"@ex.com`,
		"a..b@ex.com":             `"a..b"@ex.com`,
		"jörg@ex.com":             "jörg@ex.com",
		"postmaster":              "postmaster",
	} {
		if got := smtpPath(in); got != want {
			t.Errorf("smtpPath(%q) = %q, want %q", in, got, want)
		}
	}
}
