package shaping_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mtakit/mtakit/shaping"
)

func file(name, text string) shaping.File { return shaping.File{Name: name, Data: []byte(text)} }

// The example of docs/userguide/trafficshaping/rollups.md, with its
// documented result for foo.com (a Yahoo-hosted domain) on source IP-1:
// connection_limit = 3, max_deliveries_per_connection = 5,
// max_connection_rate = "100/min", max_message_rate = "100/s".
func TestRollupsDocExample(t *testing.T) {
	opts, _ := testOptions(t)
	s := mustLoad(t, opts, file("rollups.toml", `
["default"]
connection_limit = 10
max_connection_rate = "100/min"
max_deliveries_per_connection = 100
max_message_rate = "100/s"
idle_timeout = "60s"
enable_tls = "Opportunistic"
consecutive_connection_failures_before_delay = 100

["yahoo.com"]
max_deliveries_per_connection = 20

["foo.com"]
mx_rollup = false
max_deliveries_per_connection = 50
connection_limit = 3

["foo.com".sources."IP-1"]
max_deliveries_per_connection = 5
`))
	got := pathConfig(t, s, "IP-1", siteYahoo, "foo.com")
	if got.ConnectionLimit != 3 || got.MaxDeliveriesPerConnection != 5 ||
		got.MaxConnectionRate != "100/min" || got.MaxMessageRate != "100/s" {
		t.Errorf("foo.com/IP-1: %+v", got)
	}
	// foo.com from another source: the domain block without the source's.
	if got := pathConfig(t, s, "IP-2", siteYahoo, "foo.com"); got.MaxDeliveriesPerConnection != 50 || got.ConnectionLimit != 3 {
		t.Errorf("foo.com/IP-2: mdpc %d limit %d, want 50 3", got.MaxDeliveriesPerConnection, got.ConnectionLimit)
	}
	// yahoo.com and every domain on its MX: the site block.
	for _, d := range []string{"yahoo.com", "other-yahoo-hosted.example"} {
		if got := pathConfig(t, s, "IP-1", siteYahoo, d); got.MaxDeliveriesPerConnection != 20 || got.ConnectionLimit != 10 {
			t.Errorf("%s: mdpc %d limit %d, want 20 10", d, got.MaxDeliveriesPerConnection, got.ConnectionLimit)
		}
	}
}

// A local file over the community file: blocks merge key by key, a later
// replace_base block discards the earlier blocks of its domain (values,
// sources and rules), provider blocks merge, additional_* maps merge.
func TestMergeLocalOverride(t *testing.T) {
	opts, _ := testOptions(t)
	s := mustLoad(t, opts, communityFixture(t), file("custom-shaping.toml", `
["comcast.net"]
connection_limit = 2

["gmail.com"]
max_message_rate = "50/s"
additional_connection_limits = {"fleet-gmail" = 40}

[provider."yahoo"]
max_deliveries_per_connection = 10
provider_connection_limit = "local:3"

["example.com"]
mx_rollup = false
replace_base = true
connection_limit = 1
`))
	comcast := communityDefault()
	comcast.ConnectionLimit = 2
	comcast.MaxDeliveriesPerConnection = 1000
	comcast.EnableTLS = shaping.Required
	comcast.IdleTimeout = 30 * time.Second
	comcast.ConsecutiveConnectionFailuresBeforeDelay = 24
	assertConfig(t, pathConfig(t, s, "ip-1", siteComcast, "comcast.net"), comcast)

	gmail := communityDefault()
	gmail.EnableTLS = shaping.Required
	gmail.MaxDeliveriesPerConnection = 50
	gmail.ConsecutiveConnectionFailuresBeforeDelay = 5
	gmail.ProviderName = "google"
	gmail.MaxMessageRate = "50/s"
	gmail.AdditionalConnectionLimits = map[string]shaping.LimitSpec{
		"shaping-provider-google-ip-1-limit": {Limit: 5},
		"fleet-gmail":                        {Limit: 40},
	}
	assertConfig(t, pathConfig(t, s, "ip-1", siteGmail, "gmail.com"), gmail)

	yahoo := communityDefault()
	yahoo.MaxDeliveriesPerConnection = 10
	yahoo.ProviderName = "yahoo"
	yahoo.AdditionalConnectionLimits = map[string]shaping.LimitSpec{"shaping-provider-yahoo-ip-1-limit": {Limit: 3, Local: true}}
	assertConfig(t, pathConfig(t, s, "ip-1", siteYahoo, "yahoo.com"), yahoo)

	// example.com: the community block (connection_limit 3,
	// max_deliveries_per_connection 100 and the "my source name" source
	// block) is gone; default still applies.
	ex := communityDefault()
	ex.ConnectionLimit = 1
	assertConfig(t, pathConfig(t, s, "my source name", "whatever", "example.com"), ex)
}

func TestProviderSourcesAndRates(t *testing.T) {
	opts, _ := testOptions(t)
	// The test_provider case of KumoMTA's shaping.rs, in substance.
	s := mustLoad(t, opts, file("p.toml", `
[provider."Office 365"]
match=[{MXSuffix=".olc.protection.outlook.com"},{DomainSuffix=".outlook.com"}]
enable_tls = "Required"
provider_connection_limit = 10
provider_max_message_rate = "120/s"

[provider."Office 365".sources."new-source"]
provider_source_selection_rate = "500/d,max_burst=1"
max_deliveries_per_connection = 7
`))
	// DomainSuffix matches without DNS.
	c := pathConfig(t, s, "invalid.source", "invalid.site", "x.outlook.com")
	want := shaping.Default()
	want.EnableTLS = shaping.Required
	want.ProviderName = "Office 365"
	want.AdditionalConnectionLimits = map[string]shaping.LimitSpec{"shaping-provider-Office 365-invalid.source-limit": {Limit: 10}}
	want.AdditionalMessageRateThrottles = map[string]string{"shaping-provider-Office 365-invalid.source-rate": "120/s"}
	assertConfig(t, c, want)

	c = pathConfig(t, s, "new-source", siteHotmail, "hotmail.com")
	want.AdditionalConnectionLimits = map[string]shaping.LimitSpec{"shaping-provider-Office 365-new-source-limit": {Limit: 10}}
	want.AdditionalMessageRateThrottles = map[string]string{"shaping-provider-Office 365-new-source-rate": "120/s"}
	want.AdditionalSourceSelectionRates = map[string]string{"shaping-provider-Office 365-new-source-selection-rate": "500/d,max_burst=1"}
	want.MaxDeliveriesPerConnection = 7
	assertConfig(t, c, want)
}

func TestUnenforcedKeysKept(t *testing.T) {
	opts, _ := testOptions(t)
	s := mustLoad(t, opts, file("o.toml", `
["default"]
enable_dane = true
reconnect_strategy = "TerminateSession"
prohibited_hosts = ["10.0.0.0/8", "192.0.2.1"]
skip_hosts = ["::1"]
ehlo_domain = "mta.example.net"
smtp_port = 2525
rset_timeout = 7
connect_timeout = "1m 30s"
tls_certificate = {key_data = "PEM"}
`))
	c := pathConfig(t, s, "s", "site", "example.org")
	if !c.EnableDANE || c.Other["reconnect_strategy"] != "TerminateSession" || c.TLSCertificate == nil ||
		c.TLSCertificate.KeyData != "PEM" || !c.EnableMTASTS {
		t.Errorf("Other = %v", c.Other)
	}
	if fmtAny(c.ProhibitedHosts) != "[10.0.0.0/8 192.0.2.1/32]" || fmtAny(c.SkipHosts) != "[::1/128]" {
		t.Errorf("hosts %v %v", c.ProhibitedHosts, c.SkipHosts)
	}
	if c.EHLODomain != "mta.example.net" || c.SMTPPort != 2525 || c.RsetTimeout != 7*time.Second || c.ConnectTimeout != 90*time.Second {
		t.Errorf("%+v", c)
	}
}

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	opts, _ := testOptions(t)
	doc := `["default"]
connection_limit = 10
conection_limit = 5
idle_timeout = "5 minuts"

["example.com"]
mx_rollup = false
max_message_rate = "100/fortnight"
enable_tls = "Sometimes"

["example.com".sources."ip-1"]
max_connection_rate = 5

[["example.com".automation]]
regex = "ok"
action = "Suspend"
duration = "1h"

[["example.com".automation]]
regex = "(unclosed"
action = "Explode"
duration = "soon"
trigger = {Threshold="x/h"}
colour = "red"

[provider."p"]
match = [{MXPrefix = "mx."}]
provider_connection_limit = 0
`
	_, err := shaping.Load(context.Background(), opts, file("bad.toml", doc))
	if err == nil {
		t.Fatal("Load succeeded")
	}
	msg := err.Error()
	for _, want := range []string{
		"bad.toml:3: default.conection_limit: unknown key conection_limit",
		`bad.toml:4: default.idle_timeout: invalid duration "5 minuts"`,
		`bad.toml:8: "example.com".max_message_rate: shaping: throttle "100/fortnight"`,
		`bad.toml:9: "example.com".enable_tls: invalid value "Sometimes"`,
		`bad.toml:12: "example.com".sources.ip-1.max_connection_rate: want a throttle string`,
		`bad.toml:20: "example.com".automation[1].regex: invalid regex "(unclosed"`,
		`bad.toml:21: "example.com".automation[1].action: element 0: invalid action "Explode"`,
		`bad.toml:22: "example.com".automation[1].duration: invalid duration "soon"`,
		`bad.toml:23: "example.com".automation[1].trigger: shaping: throttle "x/h"`,
		`bad.toml:24: "example.com".automation[1].colour: unknown key colour`,
		`bad.toml:27: provider.p.match[0]: unknown match kind MXPrefix`,
		`bad.toml:28: provider.p.provider_connection_limit: limit must be 1 or larger`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q", want)
		}
	}
	if t.Failed() {
		t.Logf("errors:\n%s", msg)
	}
	if n := strings.Count(msg, "\n") + 1; n != 12 {
		t.Errorf("%d errors, want 12:\n%s", n, msg)
	}

	// A TOML syntax error.
	_, err = shaping.Load(context.Background(), opts, file("syntax.toml", "[\"default\"]\nconnection_limit = \n"))
	if err == nil || !strings.HasPrefix(err.Error(), "syntax.toml:2:") {
		t.Errorf("syntax error: %v", err)
	}
	// SetConfig values are checked as the key's values.
	_, err = shaping.Load(context.Background(), opts, file("set.toml", `
[["default".automation]]
regex = "x"
action = {SetConfig={name="connection_limit", value="many"}}
duration = "1h"
`))
	if err == nil || !strings.Contains(err.Error(), `set.toml:4: default.automation[0].action: element 0: SetConfig: connection_limit`) {
		t.Errorf("SetConfig check: %v", err)
	}
}

func TestDNSFailuresFailSoftly(t *testing.T) {
	opts, srv := testOptions(t, `
nullmx.example. 300 IN MX 0 .
`)
	srv.SetRcode("broken.example", dns.RcodeServerFailure)
	files := []shaping.File{file("d.toml", `
["default"]
connection_limit = 7

["broken.example"]
connection_limit = 1

["nullmx.example"]
connection_limit = 2

["nxdomain.example"]
connection_limit = 3

["comcast.net"]
connection_limit = 4

["xfinity.com"]
max_deliveries_per_connection = 9
`)}
	// Default levels: Ignore; the load works and the other blocks apply.
	s := mustLoad(t, opts, files...)
	if len(s.Warnings())+len(s.Errors()) != 0 {
		t.Errorf("unexpected reports: %q %q", s.Warnings(), s.Errors())
	}
	if c := pathConfig(t, s, "s", siteComcast, "comcast.net"); c.ConnectionLimit != 4 || c.MaxDeliveriesPerConnection != 9 {
		t.Errorf("comcast: %d %d", c.ConnectionLimit, c.MaxDeliveriesPerConnection)
	}
	if c := pathConfig(t, s, "s", "broken.example", "broken.example"); c.ConnectionLimit != 7 {
		t.Errorf("broken.example: %d, want the default block's 7", c.ConnectionLimit)
	}

	opts.DNSFail, opts.NullMX, opts.AliasedSite = shaping.Warn, shaping.Error, shaping.Warn
	s = mustLoad(t, opts, files...)
	w, e := strings.Join(s.Warnings(), "\n"), strings.Join(s.Errors(), "\n")
	for _, want := range []string{"error resolving MX for broken.example", "error resolving MX for nxdomain.example",
		"multiple domain blocks alias to the same site: " + siteComcast + ": comcast.net, xfinity.com"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if !strings.Contains(e, "domain nullmx.example has a NULL MX") {
		t.Errorf("errors: %s", e)
	}

	// Without a resolver every mx_rollup block is a DNS failure.
	s = mustLoad(t, shaping.Options{DNSFail: shaping.Warn}, files...)
	if len(s.Warnings()) != 5 {
		t.Errorf("warnings without resolver: %q", s.Warnings())
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "2 hours": 2 * time.Hour, "5 minutes": 5 * time.Minute,
		"3 days": 72 * time.Hour, "1hr": time.Hour, "30s": 30 * time.Second, "1h 30m": 90 * time.Minute,
		"1h30m": 90 * time.Minute, "250ms": 250 * time.Millisecond, "1 week": 7 * 24 * time.Hour,
	} {
		got, err := shaping.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "5", "5 minuts", "1.5h", "h", "-1s", "soon"} {
		if _, err := shaping.ParseDuration(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}

// Errors in a copy of the community file land on the right lines,
// including inside its second comcast.net automation rule.
func TestCommunityFileErrorLines(t *testing.T) {
	opts, _ := testOptions(t)
	text := string(communityFixture(t).Data)
	text = strings.Replace(text, `remember_broken_tls = "3 days"`, `remember_broken_tls = "3 dayz"`, 1)
	text = strings.Replace(text, `regex = "^(?!.*KumoMTA internal).*RL000010"`, `regex = "^(?!.*KumoMTA internal.*RL000010"`, 1)
	text = strings.Replace(text, `provider_connection_limit = 10`, `provider_connection_limit = "ten"`, 1)
	text = strings.Replace(text, `connection_limit = "local:5"`, `connection_limit = "remote:5"`, 1)
	_, err := shaping.Load(context.Background(), opts, file("shaping.toml", text))
	if err == nil {
		t.Fatal("loaded")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"shaping.toml:64: default.remember_broken_tls:", `shaping.toml:150: provider.apple.provider_connection_limit:`,
		`shaping.toml:175: "comcast.net".automation[1].regex:`, `shaping.toml:238: "http://127.0.0.1:8008.tsa.kumomta".connection_limit:`}
	if len(lines) != len(want) {
		t.Fatalf("errors:\n%s", err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d: %q, want prefix %q", i, lines[i], w)
		}
	}
}
