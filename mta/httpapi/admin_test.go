package httpapi_test

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/logs"
)

// inject sends one Static message per recipient and fails the test if
// any is not spooled.
func (e *env) inject(t *testing.T, rcpts ...string) {
	t.Helper()
	var list []map[string]any
	for _, r := range rcpts {
		list = append(list, map[string]any{"email": r})
	}
	var resp httpapi.InjectResponse
	body := map[string]any{"envelope_sender": "s@example.com", "content": "Subject: admin test\n\nx", "template_dialect": "Static", "recipients": list}
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 || resp.SuccessCount != len(rcpts) {
		t.Fatalf("inject: %d %+v", code, resp)
	}
}

func TestAdminBounce(t *testing.T) {
	e := startEnv(t, envOpts{hold: true})
	e.inject(t, "a@dest.test", "b@dest.test", "c@other.test")

	var br httpapi.BounceResponse
	if code := e.call(t, "POST", "/api/admin/bounce/v1", httpapi.BounceRequest{Domain: "dest.test", Reason: "bad list", Duration: "10m"}, &br); code != 200 || br.ID == "" {
		t.Fatalf("bounce: %d %+v", code, br)
	}
	if br.TotalBounced != 2 || e.srv.QueuedCount() != 1 {
		t.Errorf("bounced %d, %d still queued; want 2 and 1", br.TotalBounced, e.srv.QueuedCount())
	}
	ab := e.log.OfType(logs.AdminBounce)
	if len(ab) != 2 || !strings.Contains(ab[0].Response.Content, "bad list") {
		t.Fatalf("AdminBounce records: %+v", ab)
	}
	// The rule bounces new arrivals for its duration.
	e.inject(t, "late@dest.test")
	e.srv.ReleaseDelivery()
	waitFor(t, "late arrival bounced", func() bool { return len(e.log.OfType(logs.AdminBounce)) == 3 })

	var list []httpapi.BounceEntry
	if code := e.call(t, "GET", "/api/admin/bounce/v1", nil, &list); code != 200 || len(list) != 1 {
		t.Fatalf("list: %d %+v", code, list)
	}
	if l := list[0]; l.ID != br.ID || l.Domain != "dest.test" || l.Reason != "bad list" || l.TotalBounced != 3 || !(l.Duration == "10m" || strings.HasPrefix(l.Duration, "9m")) {
		t.Errorf("list entry %+v", l)
	}
	if code := e.call(t, "DELETE", "/api/admin/bounce/v1", httpapi.CancelRequest{ID: br.ID}, nil); code != 200 {
		t.Errorf("cancel: %d", code)
	}
	if code := e.call(t, "DELETE", "/api/admin/bounce/v1", httpapi.CancelRequest{ID: br.ID}, nil); code != 404 {
		t.Errorf("second cancel: %d, want 404", code)
	}
	if code := e.call(t, "GET", "/api/admin/bounce/v1", nil, &list); code != 200 || len(list) != 0 {
		t.Errorf("list after cancel: %+v", list)
	}
	for _, bad := range []httpapi.BounceRequest{{Domain: "x"}, {Reason: "r", Duration: "soon"}, {Reason: "r", SuppressLogging: true}} {
		var out struct{ Error string }
		if code := e.call(t, "POST", "/api/admin/bounce/v1", bad, &out); code != 400 || out.Error == "" {
			t.Errorf("%+v: %d %q, want 400", bad, code, out.Error)
		}
	}
}

func TestAdminSuspendAndReadyQueue(t *testing.T) {
	e := startEnv(t, envOpts{})
	var sr httpapi.IDResponse
	if code := e.call(t, "POST", "/api/admin/suspend/v1", httpapi.SuspendRequest{Domain: "dest.test", Reason: "maintenance", Duration: "1h"}, &sr); code != 200 || sr.ID == "" {
		t.Fatalf("suspend: %d %+v", code, sr)
	}
	e.inject(t, "a@dest.test", "b@other.test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := e.sink.Count(); n != 1 || e.sink.Messages()[0].To[0] != "b@other.test" {
		t.Fatalf("suspended domain delivered: %d messages", n)
	}
	var sl []httpapi.SuspendEntry
	if e.call(t, "GET", "/api/admin/suspend/v1", nil, &sl); len(sl) != 1 || sl[0].Domain != "dest.test" || sl[0].Reason != "maintenance" {
		t.Fatalf("suspend list %+v", sl)
	}
	var sum httpapi.QueueSummary
	if e.call(t, "GET", "/api/admin/queue-summary/v1", nil, &sum); len(sum.Scheduled) != 1 || sum.Scheduled[0].Name != "dest.test" || sum.Scheduled[0].Count != 1 {
		t.Errorf("queue summary %+v", sum)
	}
	if code := e.call(t, "DELETE", "/api/admin/suspend/v1", httpapi.CancelRequest{ID: sr.ID}, nil); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	if err := e.sink.WaitCount(ctx, 2); err != nil {
		t.Fatal("not delivered after the suspension was lifted:", err)
	}

	// suspend-ready-q holds the sink's ready queue.
	var rr httpapi.IDResponse
	if code := e.call(t, "POST", "/api/admin/suspend-ready-q/v1", httpapi.SuspendReadyRequest{Name: e.readyQueue, Reason: "peer trouble", Duration: "1h"}, &rr); code != 200 {
		t.Fatalf("suspend-ready-q: %d", code)
	}
	e.inject(t, "c@dest.test")
	time.Sleep(300 * time.Millisecond)
	if n := e.sink.Count(); n != 2 {
		t.Fatalf("%d delivered through a suspended ready queue", n-2)
	}
	if n := len(e.log.OfType(logs.TransientFailure)); n != 0 {
		t.Errorf("%d TransientFailure records; a ready-queue suspension charges no attempt", n)
	}
	var rl []httpapi.SuspendReadyEntry
	if e.call(t, "GET", "/api/admin/suspend-ready-q/v1", nil, &rl); len(rl) != 1 || rl[0].Name != e.readyQueue || rl[0].ID != rr.ID {
		t.Fatalf("ready suspension list %+v", rl)
	}
	if code := e.call(t, "DELETE", "/api/admin/suspend-ready-q/v1", httpapi.CancelRequest{ID: rr.ID}, nil); code != 200 {
		t.Fatalf("cancel ready: %d", code)
	}
	if err := e.sink.WaitCount(ctx, 3); err != nil {
		t.Fatal("not delivered after the ready-queue suspension was lifted:", err)
	}
}

func TestAdminRebindFlushAndInspect(t *testing.T) {
	// A 451 sends the message back for an hour; rebind with always_flush
	// retries it at once.
	e := startEnv(t, envOpts{retry: time.Hour})
	fault := e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("retry"), Code: 451, Text: "later", Times: 1})
	e.inject(t, "retry@dest.test")
	waitFor(t, "transient failure", func() bool { return len(e.log.OfType(logs.TransientFailure)) == 1 })
	if e.sink.FaultHits(fault) != 1 {
		t.Fatal("fault not hit")
	}
	id := e.log.OfType(logs.TransientFailure)[0].ID

	// The record is logged just before the new due time is spooled.
	var ir httpapi.InspectResponse
	waitFor(t, "the retry to be spooled", func() bool {
		if code := e.call(t, "GET", "/api/admin/inspect-message/v1?want_body=true&id="+id, nil, &ir); code != 200 {
			t.Fatalf("inspect: %d", code)
		}
		return ir.Message.NumAttempts == 1
	})
	if ir.ID != id || ir.Message.Sender != "s@example.com" || ir.Message.NumAttempts != 1 || ir.Message.Due == nil ||
		time.Until(*ir.Message.Due) < 30*time.Minute || ir.Message.Data == nil || !strings.Contains(*ir.Message.Data, "admin test") {
		t.Fatalf("inspect %+v", ir)
	}
	if code := e.call(t, "GET", "/api/admin/inspect-message/v1?id=00000000000000000000000000000000", nil, nil); code != 404 {
		t.Errorf("unknown id: %d, want 404", code)
	}
	if code := e.call(t, "GET", "/api/admin/inspect-message/v1?id=zz", nil, nil); code != 400 {
		t.Errorf("bad id: %d, want 400", code)
	}

	// Rescheduling follows the spooling closely: flush until it is found.
	waitFor(t, "rebind to flush the message", func() bool {
		var rb httpapi.RebindResponse
		if code := e.call(t, "POST", "/api/admin/rebind/v1", httpapi.RebindRequest{Domain: "dest.test", Reason: "route fixed", AlwaysFlush: true}, &rb); code != 200 || rb.Rebound > 1 {
			t.Fatalf("rebind: %d %+v", code, rb)
		}
		return rb.Rebound == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 1); err != nil {
		t.Fatal("flushed message not delivered:", err)
	}
	if recs := e.log.OfType(logs.AdminRebind); len(recs) != 1 || !strings.Contains(recs[0].Response.Content, "route fixed") {
		t.Errorf("AdminRebind records %+v", recs)
	}
}

func TestAdminRebindMovesQueue(t *testing.T) {
	e := startEnv(t, envOpts{hold: true})
	e.inject(t, "a@dest.test", "b@dest.test")
	var rb httpapi.RebindResponse
	req := httpapi.RebindRequest{Domain: "dest.test", Reason: "move", Data: map[string]string{"routing_domain": "relay.test"}}
	if code := e.call(t, "POST", "/api/admin/rebind/v1", req, &rb); code != 200 || rb.Rebound != 2 {
		t.Fatalf("rebind: %d %+v", code, rb)
	}
	if got := e.srv.QueueSummary(); got["dest.test!relay.test"] != 2 || len(got) != 1 {
		t.Errorf("queues after rebind %v", got)
	}
}

func TestAccessControl(t *testing.T) {
	e := startEnv(t, envOpts{hold: true, cfg: func(c *httpapi.Config) {
		c.TrustedHosts = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // not us
		c.Admin = httpapi.StaticCredentials("admin", "s3cret", "admin-token")
		c.Inject = httpapi.StaticCredentials("", "", "inject-token")
	}})
	basic := func(u, p string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(u, p) }
	}
	header := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", v) }
	}
	inject := `{"envelope_sender":"s@x.test","content":"Subject: x\n\nx","recipients":[{"email":"a@dest.test"}]}`
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		auth   func(*http.Request)
		code   int
	}{
		{"admin no credentials", "GET", "/api/admin/bounce/v1", "", nil, 403},
		{"admin wrong password", "GET", "/api/admin/bounce/v1", "", basic("admin", "guess"), 401},
		{"admin basic", "GET", "/api/admin/bounce/v1", "", basic("admin", "s3cret"), 200},
		{"admin bearer", "GET", "/api/admin/suspend/v1", "", header("Bearer admin-token"), 200},
		{"admin with inject token", "GET", "/api/admin/suspend/v1", "", header("Bearer inject-token"), 401},
		{"malformed basic", "GET", "/api/admin/bounce/v1", "", header("Basic !!!"), 400},
		{"unknown scheme", "GET", "/api/admin/bounce/v1", "", header("Digest x"), 400},
		{"inject no credentials", "POST", "/api/inject/v1", inject, nil, 403},
		{"inject with admin token", "POST", "/api/inject/v1", inject, header("Bearer admin-token"), 401},
		{"inject token", "POST", "/api/inject/v1", inject, header("Bearer inject-token"), 200},
		{"liveness is open", "GET", "/api/check-liveness/v1", "", nil, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			if code := call(t, tc.auth, tc.method, e.url+tc.path, body, nil); code != tc.code {
				t.Errorf("got %d, want %d", code, tc.code)
			}
		})
	}
	if n := e.srv.QueuedCount(); n != 1 {
		t.Errorf("%d queued, want 1 (only the authorised inject)", n)
	}
}

func TestLiveness(t *testing.T) {
	var down atomic.Bool
	e := startEnv(t, envOpts{hold: true, cfg: func(c *httpapi.Config) {
		c.Live = func() error {
			if down.Load() {
				return context.Canceled
			}
			return nil
		}
	}})
	if code := e.call(t, "GET", "/api/check-liveness/v1", nil, nil); code != 200 {
		t.Errorf("live: %d", code)
	}
	down.Store(true)
	if code := e.call(t, "GET", "/api/check-liveness/v1", nil, nil); code != 503 {
		t.Errorf("not live: %d", code)
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {1500 * time.Millisecond, "2s"}, {5 * time.Minute, "5m"}, {time.Hour + 2*time.Minute + 3*time.Second, "1h 2m 3s"},
		{24 * time.Hour, "1day"}, {50 * time.Hour, "2days 2h"},
	}
	for _, tc := range tests {
		if got := httpapi.FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestQueueSummaryShowsReadyQueueAndPathConfig(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageData, Delay: 500 * time.Millisecond, Times: 1})
	e.inject(t, "slow@dest.test")
	var sum httpapi.QueueSummary
	waitFor(t, "a ready queue with a connection", func() bool {
		e.call(t, "GET", "/api/admin/queue-summary/v1", nil, &sum)
		return len(sum.Ready) == 1 && sum.Ready[0].Connections == 1
	})
	rq := sum.Ready[0]
	if rq.Name != e.readyQueue || rq.Pool != "unspecified" || rq.Source != "unspecified" {
		t.Errorf("ready queue %+v", rq)
	}
	if pc := rq.PathConfig; pc.ConnectionLimit != 32 || pc.EnableTLS != "Opportunistic" || pc.IdleTimeout != "200ms" || pc.MaxDeliveriesPerConnection != 1024 {
		t.Errorf("path config %+v", pc)
	}
	if len(sum.Scheduled) != 1 || sum.Scheduled[0].Count != 1 {
		t.Errorf("scheduled %+v", sum.Scheduled)
	}
}
