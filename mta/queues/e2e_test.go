package queues_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/mta/queues"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

const sourcesTOML = `
[source."lo-2"]
source_address = "127.0.0.2"
[source."lo-3"]
source_address = "127.0.0.3"

[pool."default-pool"]
[pool."default-pool"."lo-2"]
[pool."acme-pool"]
[pool."acme-pool"."lo-3"]
`

const queuesTOML = `
tenant_header = "X-Tenant"
remove_tenant_header = true
campaign_header = "X-Campaign"
remove_campaign_header = false
default_tenant = "default"

[tenant.default]
egress_pool = "default-pool"

[tenant.acme]
egress_pool = "acme-pool"
retry_interval = "1s"

[queue.default]
max_age = "1 hour"

# route.test has no MX; its mail goes by dest.test's.
[queue."route.test"]
routing_domain = "dest.test"
`

// TestTenantRoutingEndToEnd runs an mta.Server whose policy comes from
// queues.toml and whose pools come from sources.toml, receives mail over
// SMTP on loopback and checks at the sink which source address each
// tenant's mail left from and that the tenant header was removed.
func TestTenantRoutingEndToEnd(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Store: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	sinkAP := netip.MustParseAddrPort(sink.Addr())

	dns := dnstest.Start(t)
	dns.SetMX("dest.test", dnstest.MX{Pref: 10, Host: "mx.dest.test"})
	dns.SetA("mx.dest.test", "127.0.0.1")
	res, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{dns.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}

	srcs, err := egress.ParseSources("sources.toml", []byte(sourcesTOML))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := queues.Parse("queues.toml", []byte(queuesTOML))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckPools(func(n string) bool { _, ok := srcs.Pools[n]; return ok }); err != nil {
		t.Fatal(err)
	}
	helper := queues.NewHelper(cfg)

	records := &logs.Memory{}
	srv, err := mta.New(mta.Options{
		Hostname:    "mx.test",
		DataSpool:   spool.NewMemory(),
		MetaSpool:   spool.NewMemory(),
		Log:         records,
		LogMeta:     []string{"tenant", "campaign"},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Resolver:    res,
		EgressPools: srcs.EgressPools(),
		Policy:      helper.Policy(mta.Policy{}),
		Shaper: shaping.PathFunc(func(context.Context, string, string, string) (shaping.PathConfig, error) {
			pc := shaping.Default()
			pc.ProhibitedHosts = []netip.Prefix{} // empty, not nil: allow loopback
			pc.SMTPPort = int(sinkAP.Port())
			pc.IdleTimeout = 100 * time.Millisecond
			return pc, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}

	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(c)
	expect := func(code int) string {
		t.Helper()
		got, msg, err := tp.ReadResponse(0)
		if got != code {
			t.Fatalf("reply %d %q (%v), want %d", got, msg, err, code)
		}
		return msg
	}
	cmd := func(line string, code int) string {
		t.Helper()
		if err := tp.PrintfLine("%s", line); err != nil {
			t.Fatal(err)
		}
		return expect(code)
	}
	send := func(rcpt, headers string, final int) string {
		t.Helper()
		cmd("MAIL FROM:<s@example.com>", 250)
		cmd("RCPT TO:<"+rcpt+">", 250)
		cmd("DATA", 354)
		body := headers + "From: s@example.com\r\nTo: " + rcpt + "\r\nSubject: " + rcpt + "\r\n\r\nHello.\r\n.\r\n"
		if _, err := io.WriteString(c, body); err != nil {
			t.Fatal(err)
		}
		return expect(final)
	}
	expect(220)
	cmd("EHLO client.test", 250)
	send("a@dest.test", "X-Tenant: acme\r\nX-Campaign: spring\r\n", 250)
	send("b@dest.test", "", 250)
	send("c@route.test", "X-Tenant: acme\r\n", 250)
	msg := send("d@dest.test", "X-Tenant: nobody\r\n", 500)
	if !strings.Contains(msg, "tenant 'nobody' specified by 'X-Tenant' header is not defined in your queue config") {
		t.Errorf("undefined tenant refused with %q", msg)
	}
	cmd("QUIT", 221)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.WaitCount(ctx, 3); err != nil {
		t.Fatalf("sink has %d messages: %v", sink.Count(), err)
	}
	got := map[string]smtpsink.Message{}
	for _, m := range sink.Messages() {
		got[m.To[0]] = m
	}
	for rcpt, wantFrom := range map[string]string{"a@dest.test": "127.0.0.3", "b@dest.test": "127.0.0.2", "c@route.test": "127.0.0.3"} {
		m, ok := got[rcpt]
		if !ok {
			t.Errorf("%s not delivered", rcpt)
			continue
		}
		if !strings.HasPrefix(m.RemoteAddr, wantFrom+":") {
			t.Errorf("%s left from %s, want %s", rcpt, m.RemoteAddr, wantFrom)
		}
		data := string(m.Data)
		if strings.Contains(strings.ToLower(data), "x-tenant:") {
			t.Errorf("%s still has the tenant header:\n%s", rcpt, data)
		}
		if rcpt == "a@dest.test" && !strings.Contains(data, "X-Campaign: spring\r\n") {
			t.Errorf("%s lost the campaign header (remove_campaign_header = false):\n%s", rcpt, data)
		}
	}

	// The log records show the queues and pools.
	want := map[string][3]string{ // queue, pool, tenant meta
		"a@dest.test":  {"spring:acme@dest.test", "acme-pool", "acme"},
		"b@dest.test":  {"default@dest.test", "default-pool", "default"},
		"c@route.test": {"acme@route.test!dest.test", "acme-pool", "acme"},
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(records.OfType(logs.Delivery)) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, r := range records.OfType(logs.Delivery) {
		w, ok := want[r.Recipient[0]]
		if !ok {
			t.Errorf("unexpected delivery record for %v", r.Recipient)
			continue
		}
		pool := ""
		if r.EgressPool != nil {
			pool = *r.EgressPool
		}
		if r.Queue != w[0] || pool != w[1] {
			t.Errorf("%s: queue %q pool %q, want %q %q", r.Recipient[0], r.Queue, pool, w[0], w[1])
		}
		if r.Meta["tenant"] != w[2] {
			t.Errorf("%s: tenant meta %v, want %s", r.Recipient[0], r.Meta["tenant"], w[2])
		}
		delete(want, r.Recipient[0])
	}
	if len(want) > 0 {
		t.Errorf("no delivery records for %v", want)
	}
}
