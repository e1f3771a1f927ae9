package egress_test

import (
	"testing"

	"github.com/mtakit/mtakit/egress"
)

// The first cases are KumoMTA's own, from the name_factoring,
// mx_order_name_factor and lookup_* tests in
// crates/mailexchanger/src/lib.rs.
func TestSiteName(t *testing.T) {
	tests := []struct {
		name  string
		hosts []string
		want  string
	}{
		{"yahoo", []string{"mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net", "mta7.am0.yahoodns.net"},
			"(mta5|mta6|mta7).am0.yahoodns.net"},
		{"case normalised", []string{"mta5.AM0.yahoodns.net", "mta6.am0.yAHOodns.net", "mta7.am0.yahoodns.net"},
			"(mta5|mta6|mta7).am0.yahoodns.net"},
		{"gmail, mismatched lengths", []string{
			"gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com", "alt2.gmail-smtp-in.l.google.com",
			"alt3.gmail-smtp-in.l.google.com", "alt4.gmail-smtp-in.l.google.com"},
			"(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com"},
		{"same port", []string{"mta5.am0.yahoodns.net:123", "mta6.am0.yahoodns.net:123", "mta7.am0.yahoodns.net:123"},
			"(mta5|mta6|mta7).am0.yahoodns.net:123"},
		{"different ports", []string{"mta5.am0.yahoodns.net:123", "mta6.am0.yahoodns.net:456", "mta7.am0.yahoodns.net:123"},
			"(mta5|mta6|mta7).am0.yahoodns.(net:123|net:456)"},
		{"order matters 1", []string{"example-com.mail.protection.outlook.com.", "mx-biz.mail.am0.yahoodns.net.",
			"mx-biz.mail.am0.yahoodns.net."},
			"(example-com|mx-biz).mail.(protection|am0).(outlook|yahoodns).(com|net)"},
		{"order matters 2", []string{"mx-biz.mail.am0.yahoodns.net.", "mx-biz.mail.am0.yahoodns.net.",
			"example-com.mail.protection.outlook.com."},
			"(mx-biz|example-com).mail.(am0|protection).(yahoodns|outlook).(net|com)"},
		{"single", []string{"do.havedane.net."}, "do.havedane.net"},
		{"null MX", []string{"."}, ""},
		{"implicit MX", []string{"www.example.com."}, "www.example.com"},

		{"none", nil, ""},
		{"invalid names skipped", []string{"a..example.com", "mx.example.com", ".lead.example.com"}, "mx.example.com"},
		{"optional in the middle", []string{"a.b.example.com", "b.example.com", "c.example.com"},
			"a?.(b|c).example.com"},
		{"port with leading zero", []string{"mx.example.com:0025"}, "mx.example.com:25"},
		{"not a port", []string{"mx.example.com:smtp"}, "mx.example.com:smtp"},
		{"root mixed in", []string{".", "a.com"}, "a?.com?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := egress.SiteName(tc.hosts); got != tc.want {
				t.Errorf("SiteName(%q) = %q, want %q", tc.hosts, got, tc.want)
			}
		})
	}
}

func TestMXListSiteName(t *testing.T) {
	tests := []struct {
		entries []string
		want    string
	}{
		// KumoMTA's mx_list_refresh integration test names this site
		// "mx_list:SINK,255.255.255.255:1".
		{[]string{"127.0.0.1:2525", "255.255.255.255:1"}, "mx_list:127.0.0.1:2525,255.255.255.255:1"},
		{[]string{"localhost:2525"}, "mx_list:localhost:2525"},
		{[]string{"smart.host.local", "[10.0.0.1]"}, "mx_list:smart.host.local,[10.0.0.1]"},
	}
	for _, tc := range tests {
		if got := egress.MXListSiteName(tc.entries); got != tc.want {
			t.Errorf("MXListSiteName(%q) = %q, want %q", tc.entries, got, tc.want)
		}
	}
}

func TestReadyQueueName(t *testing.T) {
	got := egress.ReadyQueueName("ip-1", "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com", "smtp_client")
	if want := "ip-1->(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com@smtp_client"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = egress.ReadyQueueName("unspecified", egress.MXListSiteName([]string{"localhost:2525"}), "smtp_client")
	if want := "unspecified->mx_list:localhost:2525@smtp_client"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCutPort(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
		ok   bool
	}{
		{"example.com:2525", "example.com", 2525, true},
		{"example.com", "example.com", 0, false},
		{"10.0.0.1:25", "10.0.0.1", 25, true},
		{"::1", "::1", 0, false},
		{"2001:db8::1:25", "2001:db8::1:25", 0, false},
		{"[10.0.0.1]:25", "[10.0.0.1]", 25, true},
		{"[IPv6:::1]:25", "[IPv6:::1]", 25, true},
		{"[IPv6:::1]", "[IPv6:::1]", 0, false},
		{"[10.0.0.1:25]", "[10.0.0.1:25]", 0, false},
		{"example.com:70000", "example.com:70000", 0, false},
		{"example.com:", "example.com:", 0, false},
	}
	for _, tc := range tests {
		host, port, ok := egress.CutPort(tc.in)
		if host != tc.host || port != tc.port || ok != tc.ok {
			t.Errorf("CutPort(%q) = %q, %d, %v; want %q, %d, %v", tc.in, host, port, ok, tc.host, tc.port, tc.ok)
		}
	}
}
