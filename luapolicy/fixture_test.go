package luapolicy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

const fixtureDir = "../../shared/fixtures/kumomta"

// copyFixture copies KumoMTA's documented example policy and its data
// files into a temporary directory, pointing its /opt/kumomta/etc/policy,
// /var/spool/kumomta and /var/log/kumomta paths there.
func copyFixture(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "init.lua")); err != nil {
		t.Skipf("KumoMTA fixtures not available: %v", err)
	}
	dir := t.TempDir()
	r := strings.NewReplacer("/opt/kumomta/etc/policy/", dir+"/", "/var/spool/kumomta/", dir+"/spool/", "/var/log/kumomta", dir+"/logs")
	for _, name := range []string{"init.lua", "sources.toml", "dkim_data.toml", "shaping.toml", "queues.toml", "listener_domains.toml"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(r.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "init.lua")
}

// testResolver answers from an in-process DNS server that knows no
// domain, so that the MX rollup of the shaping files makes no network
// access.
func testResolver(t *testing.T) *egress.Resolver {
	d := dnstest.Start(t)
	r, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{d.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// KumoMTA's documented example policy loads with all its helpers and
// gives the configuration and lookups its files describe.
func TestKumoMTAExamplePolicy(t *testing.T) {
	path := copyFixture(t)
	dir := filepath.Dir(path)
	p, err := luapolicy.Load(path, luapolicy.Options{Resolver: testResolver(t), Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	spools := p.Spools()
	if len(spools) != 2 || spools[0].Name != "data" || spools[0].Kind != "RocksDB" || spools[1].Path != filepath.Join(dir, "spool", "meta") {
		t.Errorf("spools %+v", spools)
	}
	if lc := p.LogConfig(); lc == nil || lc.Local.LogDir != filepath.Join(dir, "logs") || lc.Local.MaxSegmentDuration != time.Minute {
		t.Errorf("log config %+v", lc)
	}
	if p.Classifier() == nil {
		t.Error("no bounce classifier")
	}
	if h := p.HTTPListeners(); len(h) != 2 || h[0].Listen != "0.0.0.0:8000" || !h[1].UseTLS {
		t.Errorf("HTTP listeners %+v", h)
	}
	ls := p.ESMTPListeners()
	if len(ls) != 2 || ls[0].Addr != "0.0.0.0:25" || ls[0].Hostname != "mail.example.com" || len(ls[0].RelayHosts) != 2 ||
		ls[1].Addr != "[::]:25" || ls[0].Domains == nil {
		t.Errorf("ESMTP listeners %+v", ls)
	}

	// listener_domains.toml
	ctx := context.Background()
	for domain, relay := range map[string]bool{"example.com": true, "a.example.com": true, "www.example.com": false, "other.net": false} {
		d, err := p.DomainLookup().LookupListenerDomain(ctx, domain, "0.0.0.0:25")
		if err != nil || d == nil || d.RelayTo != relay {
			t.Errorf("listener domain %s: %+v %v, want relay_to=%v", domain, d, err, relay)
		}
	}
	if d, _ := p.LookupListenerDomain(ctx, "fbl.example.com", "0.0.0.0:25"); d == nil || !d.LogARF.Enabled() {
		t.Errorf("fbl.example.com: %+v, want log_arf", d)
	}

	// queues.toml: tenant blocks override domain blocks.
	qc, err := p.QueueConfig("mytenant@gmail.com", "", "mytenant", "gmail.com", "")
	if err != nil || qc.RetryInterval != 17*time.Minute || qc.MaxAge != 10*time.Hour || qc.EgressPool != "pool-2" {
		t.Errorf("gmail.com/mytenant queue config %+v %v", qc, err)
	}
	qc, _ = p.QueueConfig("default-tenant@example.net", "", "default-tenant", "example.net", "")
	if qc.MaxAge != 24*time.Hour || qc.EgressPool != "pool-1" {
		t.Errorf("default tenant queue config %+v", qc)
	}

	// sources.toml
	pools := p.EgressPools()
	if pools["pool-1"] == nil || pools["pool-2"] == nil {
		t.Fatalf("egress pools %v", pools)
	}
	counts := map[string]int{}
	for range 30 {
		counts[pools["pool-2"].Next().Name()]++
	}
	if counts["ip-2"] != 20 || counts["ip-3"] != 10 {
		t.Errorf("pool-2 picks %v, want ip-2:ip-3 = 2:1", counts)
	}

	// shaping: the community file first, then the policy's shaping.toml.
	sh := p.Shaper()
	if _, ok := sh.(*shaping.Shaping); !ok {
		t.Errorf("Shaper is %T, want the shaping package's loaded configuration", sh)
	}
	pc, err := sh.PathConfig(ctx, "ip-1", "mx.example.net", "example.net")
	if err != nil || pc.ConnectionLimit != 10 || pc.MaxDeliveriesPerConnection != 100 {
		t.Errorf("default path config (community shaping.toml) %+v %v", pc, err)
	}

	warnings := strings.Join(p.Warnings(), "\n")
	if h := p.LogHooks(); len(h) != 1 || h[0].Name != "webhook" || h[0].URL != "http://10.0.0.1:4242/log" || len(h[0].Headers) != 2 {
		t.Errorf("log hooks %+v", h)
	}
	for _, w := range []string{"Traffic Shaping Automation publish/subscribe", "bounce_classifier/iana.toml is not installed"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}

	// The example dkim_data.toml keeps its keys in HashiCorp Vault, which
	// mtakit does not support: signing refuses the message, never sends
	// it unsigned.
	_, err = runFixtureMessage(t, p)
	if err == nil || !strings.Contains(err.Error(), "ault") {
		t.Errorf("signing with the Vault-based fixture: %v", err)
	}
}

// The check lists the fixture's unsupported Vault keys, by file.
func TestKumoMTAExamplePolicyCheck(t *testing.T) {
	path := copyFixture(t)
	_, err := luapolicy.Load(path, luapolicy.Options{Check: true, Resolver: testResolver(t), Logger: quietLogger})
	var ce *luapolicy.CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("check: %v", err)
	}
	if len(ce.Errors) != 1 || !strings.Contains(ce.Errors[0].Error(), "init.lua:") || !strings.Contains(ce.Errors[0].Error(), "dkim_data.toml") {
		t.Errorf("check errors: %v", ce)
	}
}

// runFixtureMessage injects a message through the policy's reception hook.
func runFixtureMessage(t *testing.T, p *luapolicy.Policy) ([]spool.ID, error) {
	t.Helper()
	srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), HoldDelivery: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Policy: p.MTAPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	return srv.Inject(context.Background(), &mta.Submission{Sender: "a@example.com", Recipients: []string{"b@gmail.com"}, Protocol: "ESMTP",
		Data: []byte("From: a@example.com\r\nTo: b@gmail.com\r\nSubject: hi\r\nX-Tenant: mytenant\r\n\r\nbody\r\n")})
}
