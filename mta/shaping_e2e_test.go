package mta_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/redistest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/shaping/redisthrottle"
	"github.com/mtakit/mtakit/spool"
)

// shapingTOML loads a shaping.toml text whose paths point at the e2e
// sink: loopback allowed, the sink's port, short timeouts.
func shapingTOML(t *testing.T, e *e2e, body string) *shaping.Shaping {
	t.Helper()
	port := 0
	fmt.Sscanf(e.sink.Addr()[strings.LastIndex(e.sink.Addr(), ":")+1:], "%d", &port)
	text := fmt.Sprintf(`
["default"]
prohibited_hosts = []
smtp_port = %d
connect_timeout = "2s"
banner_timeout = "2s"
idle_timeout = "200ms"
%s`, port, body)
	res := e.srvResolver(t)
	sh, err := shaping.Load(context.Background(), shaping.Options{LookupMX: res.MXHostNames, SiteName: egress.SiteName, Logger: quietLogger()},
		shaping.File{Name: "test-shaping.toml", Data: []byte(text)})
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

// restartWith replaces e's server by one using shaper (and more options),
// sharing e's DNS and sink.
func restartWith(t *testing.T, e *e2e, shaper shaping.Shaper, more ...serverOpt) *testServer {
	t.Helper()
	e.srv.Close()
	opts := append([]serverOpt{func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = true
		o.Resolver = e.srvResolver(t)
		o.Shaper = shaper
		o.TLS = sinkTLS(e.sink)
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: 100 * time.Millisecond, MaxAge: time.Hour}, nil
		}
	}}, more...)
	return startServer(t, spool.NewMemory(), spool.NewMemory(), opts...)
}

// deliverySpan is the time from the first to the last Delivery record.
func deliverySpan(sink *memSink) (time.Duration, int) {
	d := sink.OfType(logs.Delivery)
	if len(d) < 2 {
		return 0, len(d)
	}
	var first, last time.Time
	for i, r := range d {
		at, err := time.Parse(time.RFC3339Nano, r.EventTime)
		if err != nil {
			panic(err)
		}
		if i == 0 || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(first), len(d)
}

// A site's connection_limit and max_message_rate from shaping.toml hold
// at the destination: concurrent connections never exceed the limit, and
// messages arrive at no more than the configured rate (+10%).
func TestShapingLimitsHoldAtTheSink(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{}, nil)
	sh := shapingTOML(t, e, `
["dest.test"]
connection_limit = 3
max_message_rate = "40/s,max_burst=1"
`)
	ts := restartWith(t, e, sh)
	const n = 60
	for i := range n {
		inject(t, ts.srv, fmt.Sprintf("r%d@dest.test", i))
	}
	ts.srv.ReleaseDelivery()
	waitFor(t, "all delivered", 20*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	if peak := e.sink.Stats().PeakConns; peak > 3 {
		t.Errorf("%d connections at once, connection_limit is 3", peak)
	}
	span, got := deliverySpan(ts.sink)
	if got != n {
		t.Fatalf("%d deliveries, want %d", got, n)
	}
	// max_burst=1: no burst (it defaults to the limit, as KumoMTA's), so
	// the span measures the sustained rate.
	rate := float64(n-1) / span.Seconds()
	t.Logf("%d messages in %v: %.1f/s", n, span, rate)
	// The limit must hold (never above 40/s + 10 %); a loaded machine may
	// deliver slower, so the lower bound only shows the throttle paces
	// rather than stalls.
	if rate > 40*1.1 || rate < 40*0.5 {
		t.Errorf("delivered at %.1f msgs/s, max_message_rate is 40/s (at most +10%%, at least half)", rate)
	}
}

// A 421 that matches an automation rule suspends the site for the rule's
// duration; delivery resumes by itself afterwards.
func TestAutomationSuspendsAndResumes(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{}, nil)
	sh := shapingTOML(t, e, `
["dest.test"]
[["dest.test".automation]]
regex = "tempfail requested"
action = "Suspend"
duration = "1s"
`)
	// The trigger goes to other.test, on the same MX (the same site), and
	// is not retried soon, so it cannot extend the suspension.
	ts := restartWith(t, e, sh, func(o *mta.Options, _ *listener.Config) {
		o.Policy.QueueConfig = func(_, _, _, domain, _ string) (mta.QueueConfig, error) {
			retry := 100 * time.Millisecond
			if domain == "other.test" {
				retry = time.Hour
			}
			return mta.QueueConfig{RetryInterval: retry, MaxAge: 24 * time.Hour}, nil
		}
	})
	ts.srv.ReleaseDelivery()
	trigger := inject(t, ts.srv, "tempfail@other.test")[0]
	waitFor(t, "the 421 seen", 5*time.Second, func() bool { return lastTransient(ts.sink, trigger) != "" })
	suspendedAt := time.Now()
	if acts := sh.ActiveActions(); len(acts) != 1 || acts[0].Kind != shaping.ActionSuspend {
		t.Fatalf("active actions %+v, want one Suspend", acts)
	}
	id := inject(t, ts.srv, "ok@dest.test")[0]
	waitFor(t, "delivery after the suspension", 10*time.Second, func() bool {
		for _, r := range ts.sink.OfType(logs.Delivery) {
			if r.ID == id.String() {
				return true
			}
		}
		return false
	})
	if waited := time.Since(suspendedAt); waited < 800*time.Millisecond {
		t.Errorf("delivered %v after the suspension began, want after its 1s", waited)
	}
	if got := lastTransient(ts.sink, id); !strings.Contains(got, "suspended") {
		t.Errorf("message during the suspension: last transient failure %q, want a suspension", got)
	}
}

// Two servers sharing one Redis respect one connection limit and one
// message rate between them; stopping Redis mid-run leaves them on local
// limits, delivering everything exactly once.
func TestTwoServersShareLimitsThroughRedis(t *testing.T) {
	rs := redistest.Start(t)
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{KeyHeader: "Subject"}, nil)
	sh := shapingTOML(t, e, `
["dest.test"]
connection_limit = 2
max_message_rate = "30/s,max_burst=1"
`)
	e.srv.Close()
	servers := make([]*testServer, 2)
	for i := range servers {
		client := redis.NewClient(&redis.Options{Addr: rs.Addr(), MaxRetries: -1})
		th := redisthrottle.New(redisthrottle.Options{Client: client, LeaseTTL: time.Second, Logger: quietLogger()})
		t.Cleanup(func() { th.Close(); client.Close() })
		servers[i] = restartWith(t, e, sh, func(o *mta.Options, _ *listener.Config) { o.Throttle = th })
	}
	const perServer = 30
	for i, ts := range servers {
		for j := range perServer {
			_, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.test"},
				Data: fmt.Appendf(nil, "Subject: s%d-%d\r\n\r\nx\r\n", i, j)})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	for _, ts := range servers {
		ts.srv.ReleaseDelivery()
	}
	// Part of the way through, Redis dies.
	waitFor(t, "some deliveries", 10*time.Second, func() bool { return e.sink.Stats().Messages >= 20 })
	beforeStop := time.Since(start)
	delivered := e.sink.Stats().Messages
	peakShared := e.sink.Stats().PeakConns
	rs.Stop()
	for _, ts := range servers {
		waitFor(t, "all delivered after Redis stopped", 20*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	}
	if peakShared > 2 {
		t.Errorf("%d connections at once from two servers sharing connection_limit = 2", peakShared)
	}
	rate := float64(delivered-1) / beforeStop.Seconds()
	t.Logf("shared: %d messages in %v (%.1f/s) with peak %d connections", delivered, beforeStop, rate, peakShared)
	if rate > 30*1.1 {
		t.Errorf("two servers delivered %.1f msgs/s together, the shared rate is 30/s", rate)
	}
	st := e.sink.Stats()
	if st.Messages != 2*perServer || st.Duplicates != 0 {
		t.Errorf("sink got %d messages (%d duplicates), want %d, none twice", st.Messages, st.Duplicates, 2*perServer)
	}
}

// A message for many recipients goes out in transactions of at most
// max_recipients_per_batch, and recipients a host refuses with 452 "too
// many recipients" go again in the next transaction, all in one attempt.
func TestRecipientBatchesAnd452(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{MaxRecipients: 2}, func(pc *shaping.PathConfig) { pc.MaxRecipientsPerBatch = 3 })
	ts := restartWith(t, e, e.shaper, func(_ *mta.Options, cfg *listener.Config) { cfg.BatchHandling = listener.BatchByDomain })
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	rcpts := []string{"a@dest.test", "b@dest.test", "c@dest.test", "d@dest.test", "e@dest.test"}
	ids := sendMail(t, rc, "s@example.com", rcpts, testMessage("batch", "x"))
	if len(ids) != 1 {
		t.Fatalf("%d messages for one domain with BatchByDomain, want 1", len(ids))
	}
	ts.srv.ReleaseDelivery()
	waitFor(t, "delivery", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	d := ts.sink.OfType(logs.Delivery)
	if len(d) != len(rcpts) || len(ts.sink.OfType(logs.TransientFailure)) != 0 {
		t.Fatalf("%d deliveries, %d transient failures; want %d deliveries in the first attempt", len(d), len(ts.sink.OfType(logs.TransientFailure)), len(rcpts))
	}
	for _, r := range d {
		if r.NumAttempts != 1 {
			t.Errorf("%s delivered on attempt %d", r.Recipient[0], r.NumAttempts)
		}
	}
	if st := e.sink.Stats(); st.Recipients != int64(len(rcpts)) || st.Messages != 3 {
		t.Errorf("sink: %d recipients in %d transactions, want 5 in 3 (2+2+1 under its limit of 2)", st.Recipients, st.Messages)
	}
}

// An automation Bounce action becomes one bounce rule for the domain,
// however many responses trigger it: later mail for the domain gets an
// AdminBounce record instead of an attempt.
func TestAutomationBounceRule(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{}, nil)
	sh := shapingTOML(t, e, `
["dest.test"]
[["dest.test".automation]]
regex = "permfail requested"
action = "Bounce"
duration = "1 minute"
`)
	ts := restartWith(t, e, sh)
	ts.srv.ReleaseDelivery()
	for i := range 3 {
		inject(t, ts.srv, fmt.Sprintf("permfail%d@dest.test", i))
	}
	// Each ends bounced: by the peer's 5xx, or by the rule the first one
	// made if it was still waiting.
	waitFor(t, "the 5xx bounces", 5*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	if n := len(ts.sink.OfType(logs.Bounce)) + len(ts.sink.OfType(logs.AdminBounce)); n != 3 {
		t.Fatalf("%d bounce records for 3 messages", n)
	}
	if _, bounces := ts.srv.QueueRules(); len(bounces) != 1 || bounces[0].Match.Domain != "dest.test" {
		t.Fatalf("bounce rules %+v, want one for dest.test", bounces)
	}
	late := inject(t, ts.srv, "ok@dest.test")[0]
	waitFor(t, "the admin bounce", 5*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	var lateBounced bool
	for _, r := range ts.sink.OfType(logs.AdminBounce) {
		lateBounced = lateBounced || r.ID == late.String() && strings.Contains(r.Response.Content, "automation rule")
	}
	if !lateBounced {
		t.Error("the later message got no AdminBounce from the automation rule")
	}
	if e.sink.Stats().Messages != 0 {
		t.Error("mail reached the sink while the bounce rule was in force")
	}
}
