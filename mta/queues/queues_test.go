package queues

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta"
)

// The KumoMTA example queues.toml: a copy in testdata keeps the test
// hermetic; the project's shared fixture is checked too when present.
var kumoFixtures = []string{
	"testdata/kumomta_queues.toml",
	"../../../shared/fixtures/kumomta/queues.toml",
}

func TestLoadKumoFixture(t *testing.T) {
	for _, path := range kumoFixtures {
		if _, err := os.Stat(path); err != nil && path != kumoFixtures[0] {
			t.Logf("skipping %s: %v", path, err)
			continue
		}
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) {
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.SchedulingHeader != "X-Schedule" || c.TenantHeader != "X-Tenant" || !c.RemoveTenantHeader ||
				c.CampaignHeader != "X-Campaign" || !c.RemoveCampaignHeader || c.DefaultTenant != "default-tenant" {
				t.Errorf("top level %+v", c)
			}
			if len(c.Tenants) != 2 || len(c.Queues) != 3 {
				t.Errorf("%d tenants, %d queues", len(c.Tenants), len(c.Queues))
			}
			if _, ok := c.Queues["gmail.com"].Tenants["mytenant"].Campaigns["welcome-campaign"]; !ok {
				t.Error("campaign block missing")
			}

			r := c.Resolve("gmail.com", "mytenant", "")
			qc := r.QueueConfig()
			// The tenant's max_age overrides the domain's; retry_interval
			// comes from the domain.
			if qc.EgressPool != "pool-2" || qc.MaxAge != 10*time.Hour || qc.RetryInterval != 17*time.Minute {
				t.Errorf("gmail.com/mytenant: %+v", qc)
			}
			qc = c.Resolve("gmail.com", "", "").QueueConfig()
			if qc.EgressPool != "" || qc.MaxAge != 22*time.Hour {
				t.Errorf("gmail.com: %+v", qc)
			}
			qc = c.Resolve("example.com", "default-tenant", "").QueueConfig()
			if qc.EgressPool != "pool-1" || qc.MaxAge != 24*time.Hour || qc.RetryInterval != 0 {
				t.Errorf("example.com/default-tenant: %+v", qc)
			}
			r = c.Resolve("my.own.hostname", "", "")
			if r.RoutingDomain == nil || *r.RoutingDomain != "[10.0.0.1]" || *r.MaxAge != 24*time.Hour {
				t.Errorf("my.own.hostname: %+v", r)
			}
			err = c.CheckPools(func(n string) bool { return n == "pool-1" || n == "pool-2" })
			if err != nil {
				t.Errorf("CheckPools: %v", err)
			}
			err = c.CheckPools(func(n string) bool { return n == "pool-1" })
			if err == nil || !strings.Contains(err.Error(), "queues.toml:21: tenant 'mytenant' uses pool 'pool-2' which is not present") {
				t.Errorf("CheckPools without pool-2: %v", err)
			}
		})
	}
}

// The helper's own test data (queue.lua's mod:test), two files merged.
func TestResolveLikeQueueLua(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.toml")
	user := filepath.Join(dir, "user.toml")
	os.WriteFile(base, []byte(`
default_tenant = 'mytenant'

[queue.default]
max_age = '24 hours'
shrink_policy = [{interval="0s", policy="ShrinkData"}]

[queue.'my.own.hostname']
routing_domain = '[10.0.0.1]'

[tenant.'mytenant']
egress_pool = 'tpool'
overall_max_message_rate = "100/s"

[tenant.'mytenant'.campaigns.'mycampaign']
overall_max_message_rate = "50/s"

[queue.'gmail.com'.'mytenant']
egress_pool = "foo"
`), 0o644)
	os.WriteFile(user, []byte(`
[queue.'gmail.com']
max_age = '6 hours'

[queue.'gmail.com'.'mytenant'.'campaign']
egress_pool = "bar"
protocol = { smtp = { mx_list = ["relay.example:2525", { name = "mx.example", addr = "10.0.0.1" }] } }
`), 0o644)
	c, err := Load(base, user)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(r Resolved) string {
		if r.EgressPool == nil {
			return ""
		}
		return *r.EgressPool
	}
	if r := c.Resolve("foo.com", "", ""); *r.MaxAge != 24*time.Hour {
		t.Error("foo.com max_age")
	}
	if r := c.Resolve("gmail.com", "", ""); *r.MaxAge != 6*time.Hour || pool(r) != "" {
		t.Error("gmail.com")
	}
	if r := c.Resolve("example.com", "mytenant", ""); pool(r) != "tpool" {
		t.Error("example.com/mytenant")
	}
	if r := c.Resolve("gmail.com", "mytenant", ""); pool(r) != "foo" {
		t.Error("gmail.com/mytenant")
	}
	r := c.Resolve("gmail.com", "mytenant", "campaign")
	if pool(r) != "bar" || !slices.Equal(r.QueueConfig().Protocol.MXList, []string{"relay.example:2525", "[10.0.0.1]"}) {
		t.Errorf("gmail.com/mytenant/campaign: %+v", r.QueueConfig())
	}
	if tc := c.Tenants["mytenant"]; *tc.OverallMaxMessageRate != "100/s" || *tc.Campaigns["mycampaign"].OverallMaxMessageRate != "50/s" {
		t.Error("overall_max_message_rate")
	}
	if sp := c.Queues["default"].ShrinkPolicy; len(sp) != 1 || sp[0].Policy != "ShrinkData" {
		t.Errorf("shrink_policy %+v", sp)
	}
	// Wildcard domain blocks.
	c2, err := Parse("q.toml", []byte("[queue.'*.example.com']\nmax_age = 60\n[queue.'a.example.com']\nmax_age = 120\n"))
	if err != nil {
		t.Fatal(err)
	}
	for dom, want := range map[string]time.Duration{"b.example.com": time.Minute, "x.b.example.com": time.Minute, "A.Example.COM": 2 * time.Minute} {
		if got := c2.Resolve(dom, "", "").QueueConfig().MaxAge; got != want {
			t.Errorf("%s: max_age %v, want %v", dom, got, want)
		}
	}
	if c2.Resolve("example.com", "", "").Matched {
		t.Error("*.example.com matched example.com")
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown top key", "tenant_heder = 'X'\n", "q.toml:1: unknown key tenant_heder"},
		{"unknown tenant key", "[tenant.t]\n\negres_pool = 'p'\n", "q.toml:3: unknown key tenant.t.egres_pool"},
		{"routing_domain on tenant", "[tenant.t]\nrouting_domain = 'x'\n", "q.toml:2: unknown key tenant.t.routing_domain"},
		{"unknown domain scalar", "[queue.'a.com']\nmax_agee = '1h'\n", `q.toml:2: unknown key queue."a.com".max_agee`},
		{"unknown campaign key", "[queue.'a.com'.t.c]\nbogus = 1\n", `q.toml:2: unknown key queue."a.com".t.c.bogus`},
		{"bad duration", "[queue.default]\nmax_age = '10 parsecs'\n", `q.toml:2: queue.default.max_age: invalid duration "10 parsecs": unknown unit "parsecs"`},
		{"duration type", "[queue.default]\nretry_interval = true\n", "q.toml:2: queue.default.retry_interval: invalid type bool"},
		{"bad throttle", "[tenant.t]\noverall_max_message_rate = 'fast'\n", "q.toml:2: tenant.t.overall_max_message_rate:"},
		{"bad bool", "remove_tenant_header = 'yes'\n", "q.toml:1: remove_tenant_header: invalid type string (want a boolean)"},
		{"maildir", "[queue.'a.com']\nprotocol = { maildir_path = '/tmp/x' }\n", `q.toml:2: queue."a.com".protocol.maildir_path: protocol "maildir_path" is not supported`},
		{"refresh_strategy", "[queue.default]\nrefresh_strategy = 'Sometimes'\n", "q.toml:2: queue.default.refresh_strategy: invalid value"},
		{"require_authz type", "[tenant.t]\nrequire_authz = 'daniel'\n", "q.toml:2: tenant.t.require_authz: invalid type string"},
		{"syntax", "x = 1\n[queue\n", "q.toml:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("q.toml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckPoolsPositions(t *testing.T) {
	c, err := Parse("q.toml", []byte(`
[tenant.a]
egress_pool = "good"

[queue.'x.com'.b.camp]
egress_pool = "missing"

[queue.default]
egress_pool = "unspecified"
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckPools(func(n string) bool { return n == "good" })
	if err == nil || err.Error() != "q.toml:6: domain 'x.com' tenant 'b' campaign 'camp' uses pool 'missing' which is not present in your sources helper data" {
		t.Errorf("CheckPools: %v", err)
	}
}

func TestPolicyFallback(t *testing.T) {
	c, _ := Parse("q.toml", []byte("[queue.'a.com']\nmax_age = 60\n"))
	h := NewHelper(c)
	p := h.Policy(mta.Policy{QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
		return mta.QueueConfig{EgressPool: "base"}, nil
	}})
	if qc, _ := p.QueueConfig("a.com", "", "", "a.com", ""); qc.MaxAge != time.Minute || qc.EgressPool != "" {
		t.Errorf("a.com: %+v", qc)
	}
	if qc, _ := p.QueueConfig("b.com", "", "", "b.com", ""); qc.EgressPool != "base" {
		t.Errorf("b.com: %+v (want the base hook's)", qc)
	}
	h.Store(nil)
	if qc, _ := p.QueueConfig("a.com", "", "", "a.com", ""); qc.MaxAge != 0 {
		t.Errorf("after Store(nil): %+v", qc)
	}
}
