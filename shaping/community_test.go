package shaping_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/shaping"
)

// The DNS of the tests: MX records shaped like the real providers'.
const testZone = `
comcast.net.        300 IN MX 5 mx2c1.comcast.net.
comcast.net.        300 IN MX 5 mx1a1.comcast.net.
mx1a1.comcast.net.  300 IN A 192.0.2.1
mx2c1.comcast.net.  300 IN A 192.0.2.2
xfinity.com.        300 IN MX 5 mx1a1.comcast.net.
xfinity.com.        300 IN MX 5 mx2c1.comcast.net.
mail.com.           300 IN MX 10 mx00.mail.com.
mail.com.           300 IN MX 10 mx01.mail.com.
mx00.mail.com.      300 IN A 192.0.2.3
mx01.mail.com.      300 IN A 192.0.2.4
smtp.mailgun.com.   300 IN A 192.0.2.5
gmail.com.          300 IN MX 5 gmail-smtp-in.l.google.com.
gmail.com.          300 IN MX 10 alt1.gmail-smtp-in.l.google.com.
gmail.com.          300 IN MX 20 alt2.gmail-smtp-in.l.google.com.
gmail-smtp-in.l.google.com.      300 IN A 192.0.2.6
alt1.gmail-smtp-in.l.google.com. 300 IN A 192.0.2.7
alt2.gmail-smtp-in.l.google.com. 300 IN A 192.0.2.8
yahoo.com.          300 IN MX 1 mta5.am0.yahoodns.net.
yahoo.com.          300 IN MX 1 mta6.am0.yahoodns.net.
yahoo.com.          300 IN MX 1 mta7.am0.yahoodns.net.
mta5.am0.yahoodns.net. 300 IN A 192.0.2.9
mta6.am0.yahoodns.net. 300 IN A 192.0.2.10
mta7.am0.yahoodns.net. 300 IN A 192.0.2.11
foo.com.            300 IN MX 1 mta5.am0.yahoodns.net.
foo.com.            300 IN MX 1 mta6.am0.yahoodns.net.
foo.com.            300 IN MX 1 mta7.am0.yahoodns.net.
hotmail.com.        300 IN MX 2 hotmail-com.olc.protection.outlook.com.
hotmail-com.olc.protection.outlook.com. 300 IN A 192.0.2.12
orange.fr.          300 IN MX 10 smtp-in.orange.fr.
smtp-in.orange.fr.  300 IN A 192.0.2.13
mixed.example.      300 IN MX 10 aspmx.l.google.com.
mixed.example.      300 IN MX 20 mx.other.example.
aspmx.l.google.com. 300 IN A 192.0.2.14
mx.other.example.   300 IN A 192.0.2.15
example.org.        300 IN MX 10 mx.example.org.
mx.example.org.     300 IN A 192.0.2.16
`

// Site names as KumoMTA factors the MX hosts above.
const (
	siteComcast = "(mx1a1|mx2c1).comcast.net"
	siteMailCom = "(mx00|mx01).mail.com"
	siteMailgun = "smtp.mailgun.com"
	siteGmail   = "(alt1|alt2)?.gmail-smtp-in.l.google.com"
	siteYahoo   = "(mta5|mta6|mta7).am0.yahoodns.net"
	siteHotmail = "hotmail-com.olc.protection.outlook.com"
	siteOrange  = "smtp-in.orange.fr"
	siteMixed   = "(aspmx|mx).(l|other).(google|example).(com|example)"
	siteExample = "mx.example.org"
)

// lookupMX adapts egress.Resolver to shaping.Options.LookupMX, as the
// queue engine does: hosts by preference, then name.
func lookupMX(r *egress.Resolver) func(context.Context, string) ([]string, error) {
	return func(ctx context.Context, domain string) ([]string, error) {
		plan, err := r.ResolveMX(ctx, domain)
		if errors.Is(err, egress.ErrNullMX) {
			return nil, shaping.ErrNullMX
		}
		if err != nil {
			return nil, err
		}
		hosts := slices.Clone(plan.Hosts)
		slices.SortStableFunc(hosts, func(a, b egress.MXHost) int {
			return cmp.Or(cmp.Compare(a.Preference, b.Preference), strings.Compare(a.Name, b.Name))
		})
		names := make([]string, len(hosts))
		for i, h := range hosts {
			names[i] = h.Name
		}
		return names, nil
	}
}

func testOptions(t *testing.T, zone ...string) (shaping.Options, *dnstest.Server) {
	t.Helper()
	srv := dnstest.Start(t, append([]string{testZone}, zone...)...)
	r, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return shaping.Options{LookupMX: lookupMX(r), SiteName: egress.SiteName}, srv
}

func communityFixture(t *testing.T) shaping.File {
	t.Helper()
	const path = "../../shared/fixtures/kumomta/shaping.toml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("community fixture not available: %v", err)
	}
	return shaping.File{Name: "shaping.toml", Data: data}
}

func mustLoad(t *testing.T, opts shaping.Options, files ...shaping.File) *shaping.Shaping {
	t.Helper()
	s, err := shaping.Load(context.Background(), opts, files...)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func pathConfig(t *testing.T, s shaping.Shaper, source, site, domain string) shaping.PathConfig {
	t.Helper()
	c, err := s.PathConfig(context.Background(), source, site, domain)
	if err != nil {
		t.Fatalf("PathConfig(%s, %s, %s): %v", source, site, domain, err)
	}
	return c
}

// communityDefault is the "default" block of the community file applied
// over make_egress_path's defaults, written out from the file by hand.
func communityDefault() shaping.PathConfig {
	c := shaping.Default()
	c.ConnectionLimit = 10
	c.MaxConnectionRate = "100/min"
	c.MaxDeliveriesPerConnection = 100
	c.MaxMessageRate = "100/s"
	c.IdleTimeout = 60 * time.Second
	c.DataTimeout = 30 * time.Second
	c.DataDotTimeout = 60 * time.Second
	c.EnableTLS = shaping.Opportunistic
	c.ConsecutiveConnectionFailuresBeforeDelay = 100
	c.RememberBrokenTLS = 3 * 24 * time.Hour
	return c
}

func TestCommunityFileLoadsFully(t *testing.T) {
	opts, _ := testOptions(t)
	opts.DNSFail, opts.NullMX, opts.AliasedSite, opts.ProviderOverlap = shaping.Error, shaping.Error, shaping.Error, shaping.Error
	s := mustLoad(t, opts, communityFixture(t))
	if e := s.Errors(); len(e) > 0 {
		t.Errorf("errors: %q", e)
	}
	if w := s.Warnings(); len(w) > 0 {
		t.Errorf("warnings: %q", w)
	}
	// The three mx_rollup domain blocks resolved to their sites.
	if got, want := s.Sites(), []string{siteMailCom, siteComcast, siteMailgun}; !equalSets(got, want) {
		t.Errorf("sites %q, want %q", got, want)
	}
}

func TestEmbeddedDefaultFileIsTheCommunityFile(t *testing.T) {
	fix := communityFixture(t)
	if !slices.Equal(shaping.DefaultFile().Data, fix.Data) {
		t.Fatal("embedded assets/policy-extras/shaping.toml differs from the fixture")
	}
	files, err := shaping.ReadFiles(shaping.DefaultFilePath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(shaping.DefaultFilePath); err != nil && !slices.Equal(files[0].Data, fix.Data) {
		t.Fatal("ReadFiles(DefaultFilePath) did not serve the embedded file")
	}
	if _, err := shaping.ReadFiles("/nonexistent/shaping.toml"); err == nil {
		t.Fatal("reading a missing file succeeded")
	}
}

func equalSets(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// The expected configurations below follow KumoMTA's documented
// resolution order (docs/userguide/trafficshaping/resolution.md): default,
// matching providers, provider+source, site (mx_rollup) blocks, domain
// (mx_rollup=false) blocks, site+source, domain+source; provider
// connection limits become additional_connection_limits named
// "shaping-provider-NAME-SOURCE-limit" (rollups.md, and the
// test_provider case of kumo-api-types/src/shaping.rs).
func TestCommunityFileResolution(t *testing.T) {
	opts, _ := testOptions(t)
	s := mustLoad(t, opts, communityFixture(t))

	type tc struct {
		name                 string
		source, site, domain string
		want                 func() shaping.PathConfig
	}
	tests := []tc{
		{"plain domain: default block only", "ip-1", siteExample, "example.org", communityDefault},
		{"google provider by MX suffix", "ip-1", siteGmail, "gmail.com", func() shaping.PathConfig {
			c := communityDefault()
			c.EnableTLS = shaping.Required
			c.MaxDeliveriesPerConnection = 50
			c.ConsecutiveConnectionFailuresBeforeDelay = 5
			c.ProviderName = "google"
			c.AdditionalConnectionLimits = map[string]shaping.LimitSpec{"shaping-provider-google-ip-1-limit": {Limit: 5}}
			return c
		}},
		{"yahoo provider: every MX host matches", "ip-2", siteYahoo, "yahoo.com", func() shaping.PathConfig {
			c := communityDefault()
			c.MaxDeliveriesPerConnection = 20
			c.ProviderName = "yahoo"
			return c
		}},
		{"outlook provider", "ip-1", siteHotmail, "hotmail.com", func() shaping.PathConfig {
			c := communityDefault()
			c.MaxDeliveriesPerConnection = 50
			c.ProviderName = "outlook"
			c.AdditionalConnectionLimits = map[string]shaping.LimitSpec{"shaping-provider-outlook-ip-1-limit": {Limit: 5}}
			return c
		}},
		{"orange provider", "ip-1", siteOrange, "orange.fr", func() shaping.PathConfig {
			c := communityDefault()
			c.MaxDeliveriesPerConnection = 100
			c.EnableTLS = shaping.Required
			c.ProviderName = "orange"
			c.AdditionalConnectionLimits = map[string]shaping.LimitSpec{"shaping-provider-orange-ip-1-limit": {Limit: 2}}
			return c
		}},
		{"MX hosts of two providers match no provider", "ip-1", siteMixed, "mixed.example", communityDefault},
		{"comcast.net site block", "ip-1", siteComcast, "comcast.net", func() shaping.PathConfig {
			c := communityDefault()
			c.ConnectionLimit = 25
			c.MaxDeliveriesPerConnection = 1000
			c.EnableTLS = shaping.Required
			c.IdleTimeout = 30 * time.Second
			c.ConsecutiveConnectionFailuresBeforeDelay = 24
			return c
		}},
		{"another domain on comcast's MX rolls up", "ip-1", siteComcast, "xfinity.com", func() shaping.PathConfig {
			c := communityDefault()
			c.ConnectionLimit = 25
			c.MaxDeliveriesPerConnection = 1000
			c.EnableTLS = shaping.Required
			c.IdleTimeout = 30 * time.Second
			c.ConsecutiveConnectionFailuresBeforeDelay = 24
			return c
		}},
		{"implicit MX site", "ip-1", siteMailgun, "smtp.mailgun.com", func() shaping.PathConfig {
			c := communityDefault()
			c.ConnectionLimit = 7000
			c.MaxDeliveriesPerConnection = 3
			return c
		}},
		{"mx_rollup=false domain", "ip-1", "whatever", "example.com", func() shaping.PathConfig {
			c := communityDefault()
			c.MaxDeliveriesPerConnection = 100
			c.ConnectionLimit = 3
			return c
		}},
		{"mx_rollup=false domain, its source block", "my source name", "whatever", "example.com", func() shaping.PathConfig {
			c := communityDefault()
			c.MaxDeliveriesPerConnection = 100
			c.ConnectionLimit = 5
			return c
		}},
		{"TSA pseudo-domain: local limit, max_ready, shutdown timeout", "unspecified", "whatever", "http://127.0.0.1:8008.tsa.kumomta", func() shaping.PathConfig {
			c := communityDefault()
			c.MaxDeliveriesPerConnection = 8192
			c.ConnectionLimit = 5
			c.ConnectionLimitLocal = true
			c.MaxReady = 10000
			c.SystemShutdownTimeout = 30 * time.Second
			return c
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pathConfig(t, s, tc.source, tc.site, tc.domain)
			assertConfig(t, got, tc.want())
		})
	}
}

func assertConfig(t *testing.T, got, want shaping.PathConfig) {
	t.Helper()
	if diff := diffConfig(got, want); diff != "" {
		t.Errorf("config differs:\n%s", diff)
	}
}

// diffConfig compares two configs field by field.
func diffConfig(got, want shaping.PathConfig) string {
	var b strings.Builder
	check := func(name string, g, w any, eq bool) {
		if !eq {
			b.WriteString("  " + name + ": got " + fmtAny(g) + ", want " + fmtAny(w) + "\n")
		}
	}
	check("ConnectionLimit", got.ConnectionLimit, want.ConnectionLimit, got.ConnectionLimit == want.ConnectionLimit)
	check("ConnectionLimitLocal", got.ConnectionLimitLocal, want.ConnectionLimitLocal, got.ConnectionLimitLocal == want.ConnectionLimitLocal)
	check("MaxDeliveriesPerConnection", got.MaxDeliveriesPerConnection, want.MaxDeliveriesPerConnection, got.MaxDeliveriesPerConnection == want.MaxDeliveriesPerConnection)
	check("MaxMessageRate", got.MaxMessageRate, want.MaxMessageRate, got.MaxMessageRate == want.MaxMessageRate)
	check("MaxConnectionRate", got.MaxConnectionRate, want.MaxConnectionRate, got.MaxConnectionRate == want.MaxConnectionRate)
	check("EnableTLS", got.EnableTLS, want.EnableTLS, got.EnableTLS == want.EnableTLS)
	check("SMTPPort", got.SMTPPort, want.SMTPPort, got.SMTPPort == want.SMTPPort)
	check("EHLODomain", got.EHLODomain, want.EHLODomain, got.EHLODomain == want.EHLODomain)
	durs := []struct {
		n    string
		g, w time.Duration
	}{
		{"ConnectTimeout", got.ConnectTimeout, want.ConnectTimeout},
		{"BannerTimeout", got.BannerTimeout, want.BannerTimeout},
		{"EHLOTimeout", got.EHLOTimeout, want.EHLOTimeout},
		{"MailFromTimeout", got.MailFromTimeout, want.MailFromTimeout},
		{"RcptToTimeout", got.RcptToTimeout, want.RcptToTimeout},
		{"DataTimeout", got.DataTimeout, want.DataTimeout},
		{"DataDotTimeout", got.DataDotTimeout, want.DataDotTimeout},
		{"IdleTimeout", got.IdleTimeout, want.IdleTimeout},
		{"StartTLSTimeout", got.StartTLSTimeout, want.StartTLSTimeout},
		{"RsetTimeout", got.RsetTimeout, want.RsetTimeout},
		{"AuthTimeout", got.AuthTimeout, want.AuthTimeout},
		{"RememberBrokenTLS", got.RememberBrokenTLS, want.RememberBrokenTLS},
		{"SystemShutdownTimeout", got.SystemShutdownTimeout, want.SystemShutdownTimeout},
	}
	for _, d := range durs {
		check(d.n, d.g, d.w, d.g == d.w)
	}
	check("MaxRecipientsPerBatch", got.MaxRecipientsPerBatch, want.MaxRecipientsPerBatch, got.MaxRecipientsPerBatch == want.MaxRecipientsPerBatch)
	check("ConsecutiveConnectionFailuresBeforeDelay", got.ConsecutiveConnectionFailuresBeforeDelay, want.ConsecutiveConnectionFailuresBeforeDelay, got.ConsecutiveConnectionFailuresBeforeDelay == want.ConsecutiveConnectionFailuresBeforeDelay)
	check("ProhibitedHosts", got.ProhibitedHosts, want.ProhibitedHosts, slices.Equal(got.ProhibitedHosts, want.ProhibitedHosts))
	check("SkipHosts", got.SkipHosts, want.SkipHosts, slices.Equal(got.SkipHosts, want.SkipHosts))
	check("Suspended", got.Suspended, want.Suspended, got.Suspended == want.Suspended)
	check("ProviderName", got.ProviderName, want.ProviderName, got.ProviderName == want.ProviderName)
	check("MaxReady", got.MaxReady, want.MaxReady, got.MaxReady == want.MaxReady)
	check("SourceSelectionRate", got.SourceSelectionRate, want.SourceSelectionRate, got.SourceSelectionRate == want.SourceSelectionRate)
	check("AdditionalConnectionLimits", got.AdditionalConnectionLimits, want.AdditionalConnectionLimits, mapsEqual(got.AdditionalConnectionLimits, want.AdditionalConnectionLimits))
	check("AdditionalMessageRateThrottles", got.AdditionalMessageRateThrottles, want.AdditionalMessageRateThrottles, mapsEqual(got.AdditionalMessageRateThrottles, want.AdditionalMessageRateThrottles))
	check("AdditionalSourceSelectionRates", got.AdditionalSourceSelectionRates, want.AdditionalSourceSelectionRates, mapsEqual(got.AdditionalSourceSelectionRates, want.AdditionalSourceSelectionRates))
	check("Other", got.Other, want.Other, fmtAny(got.Other) == fmtAny(want.Other))
	return b.String()
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case []netip.Prefix:
		s := make([]string, len(x))
		for i, p := range x {
			s[i] = p.String()
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	return strings.TrimSpace(strings.ReplaceAll(fmt.Sprint(v), "\n", " "))
}
