package mta_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// lastTransient returns the response text of the last transient failure
// logged for id.
func lastTransient(sink *memSink, id spool.ID) string {
	var text string
	for _, r := range sink.OfType(logs.TransientFailure) {
		if r.ID == id.String() {
			text = r.Response.Content
		}
	}
	return text
}

// A site the shaper marks suspended gets no delivery; mail waits with a
// transient failure and goes out once the suspension ends.
func TestSuspendedPathIsNotDelivered(t *testing.T) {
	var suspended atomic.Bool
	suspended.Store(true)
	e := startE2E(t, 100*time.Millisecond, time.Hour, smtpsink.Options{}, func(pc *shaping.PathConfig) {
		pc.Suspended = suspended.Load()
	})
	id := inject(t, e.srv, "r@dest.test")[0]
	waitFor(t, "transient failure while suspended", 5*time.Second, func() bool {
		return strings.Contains(lastTransient(e.testServer.sink, id), "suspended")
	})
	time.Sleep(300 * time.Millisecond) // several retry intervals
	if n := e.sink.Stats().Messages; n != 0 {
		t.Fatalf("%d messages reached a suspended site", n)
	}
	suspended.Store(false)
	waitFor(t, "delivery after the suspension", 5*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	checkExactlyOnce(t, e.testServer.sink, map[string]logs.RecordType{id.String(): logs.Delivery})
}

// slowRefuser accepts connections and closes each after delay without a
// greeting: a connection failure that takes a while.
func slowRefuser(t *testing.T, delay time.Duration) (port int, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			time.AfterFunc(delay, func() { c.Close() })
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// mxListServer delivers every queue to 127.0.0.1:port with path config
// edits, retrying after retry.
func mxListServer(t *testing.T, port int, retry time.Duration, edit func(*shaping.PathConfig), more ...serverOpt) *testServer {
	opts := append([]serverOpt{func(o *mta.Options, _ *listener.Config) {
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: retry, MaxAge: time.Hour, Protocol: mta.Protocol{MXList: []string{"127.0.0.1"}}}, nil
		}
	}, pathOpt(func(pc *shaping.PathConfig) {
		pc.ProhibitedHosts = []netip.Prefix{}
		pc.SMTPPort = port
		pc.ConnectTimeout, pc.BannerTimeout = 2*time.Second, 2*time.Second
		if edit != nil {
			edit(pc)
		}
	})}, more...)
	return startServer(t, spool.NewMemory(), spool.NewMemory(), opts...)
}

// After consecutive_connection_failures_before_delay failed connections
// in a row, the whole ready queue is given a transient failure instead of
// each message trying its own connection.
func TestConsecutiveConnectionFailuresDelayTheQueue(t *testing.T) {
	port, accepted := slowRefuser(t, 100*time.Millisecond)
	ts := mxListServer(t, port, time.Hour, func(pc *shaping.PathConfig) {
		pc.ConnectionLimit = 1
		pc.ConsecutiveConnectionFailuresBeforeDelay = 3
	})
	const n = 10
	for range n {
		inject(t, ts.srv, "r@refusing.example")
	}
	ts.srv.ReleaseDelivery()
	waitFor(t, "every message failed once", 10*time.Second, func() bool { return len(ts.sink.OfType(logs.TransientFailure)) >= n })
	time.Sleep(100 * time.Millisecond)
	if got := accepted.Load(); got != 3 {
		t.Errorf("%d connections for %d messages, want 3 (then the queue is delayed)", got, n)
	}
	if got := len(ts.sink.OfType(logs.TransientFailure)); got != n {
		t.Errorf("%d transient failures, want %d", got, n)
	}
}

// The max_age check at dispatch: a message recovered after a downtime
// longer than its max_age expires at once, without an attempt.
func TestExpiredDuringDowntime(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"))
	id := inject(t, ts.srv, "r@dest.example")[0]
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	var calls atomic.Int32
	deliver := func(context.Context, *mta.Delivery) error { calls.Add(1); return nil }
	ts2 := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"), handlerQueue(deliver, time.Hour, 50*time.Millisecond))
	waitFor(t, "expiry", 5*time.Second, func() bool { return ts2.srv.QueuedCount() == 0 })
	e := ts2.sink.OfType(logs.Expiration)
	if len(e) != 1 || e[0].ID != id.String() || !strings.Contains(e[0].Response.Content, "exceeds max_age") || e[0].NumAttempts != 0 {
		t.Fatalf("expirations %+v", e)
	}
	if calls.Load() != 0 {
		t.Error("an expired message was attempted")
	}
}

// Routing problems found at dispatch are transient failures that name the
// problem; the message stays queued.
func TestDispatchRoutingFailures(t *testing.T) {
	tests := []struct {
		name  string
		pool  string
		pools map[string]egress.Pool
		want  string
	}{
		{"undefined pool", "nope", nil, "egress pool nope is not defined"},
		{"pool without sources", "empty", map[string]egress.Pool{"empty": egress.NewPool("empty")}, "egress pool empty has no sources"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
				o.HoldDelivery = false
				o.EgressPools = tc.pools
				o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
					return mta.QueueConfig{RetryInterval: time.Hour, EgressPool: tc.pool}, nil
				}
			})
			id := inject(t, ts.srv, "r@dest.example")[0]
			waitFor(t, "transient failure", 5*time.Second, func() bool { return lastTransient(ts.sink, id) != "" })
			if got := lastTransient(ts.sink, id); !strings.Contains(got, tc.want) {
				t.Errorf("response %q, want it to say %q", got, tc.want)
			}
			if ts.srv.QueuedCount() != 1 {
				t.Error("message left the queue after a routing failure")
			}
		})
	}
}

// The routing_domain meta sends mail for one domain to another domain's
// MX hosts.
func TestRoutingDomainOverride(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{}, nil)
	e.dns.SetRcode("unroutable.test", dns.RcodeNameError) // no such domain: only the override can route it
	hook := func(_ context.Context, m *mta.Message) error {
		m.SetMeta(mta.MetaRoutingDomain, "dest.test")
		return nil
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = false
		o.Resolver = e.srvResolver(t)
		o.Shaper = e.shaper
		o.TLS = sinkTLS(e.sink)
		o.Policy.MessageReceived = hook
	})
	id := inject(t, ts.srv, "r@unroutable.test")[0]
	waitFor(t, "delivery via the routing domain", 5*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	d := ts.sink.OfType(logs.Delivery)
	if len(d) != 1 || d[0].ID != id.String() || d[0].Recipient[0] != "r@unroutable.test" {
		t.Fatalf("deliveries %+v", d)
	}
}

// Meta whose data is missing (a store cut short before acknowledgement,
// or data removed by hand) cannot be sent: the message is dropped from
// queue and spool, with nothing attempted.
func TestMetaWithoutDataIsDropped(t *testing.T) {
	data, meta := spool.NewMemory(), spool.NewMemory()
	var calls atomic.Int32
	deliver := func(context.Context, *mta.Delivery) error { calls.Add(1); return nil }
	ts := startServer(t, data, meta, handlerQueue(deliver, time.Hour, time.Hour), func(o *mta.Options, _ *listener.Config) { o.HoldDelivery = true })
	id := inject(t, ts.srv, "r@dest.example")[0]
	if err := data.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	ts.srv.ReleaseDelivery()
	waitFor(t, "message dropped", 5*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	if calls.Load() != 0 || len(ts.sink.OfType(logs.Delivery)) != 0 {
		t.Error("a message without data was delivered")
	}
	if _, err := meta.Load(context.Background(), id); !errors.Is(err, spool.ErrNotFound) {
		t.Errorf("meta left in the spool: %v", err)
	}
}

// flakySpool fails Load (failLoads times) or Store (while failStores is
// set) with an I/O error.
type flakySpool struct {
	spool.Spool
	failLoads  atomic.Int32
	failStores atomic.Bool
}

func (f *flakySpool) Load(ctx context.Context, id spool.ID) ([]byte, error) {
	if f.failLoads.Add(-1) >= 0 {
		return nil, errors.New("input/output error")
	}
	return f.Spool.Load(ctx, id)
}

func (f *flakySpool) Store(ctx context.Context, id spool.ID, b []byte) error {
	if f.failStores.Load() {
		return errors.New("no space left on device")
	}
	return f.Spool.Store(ctx, id, b)
}

// A data spool that fails to load gives the attempt a transient failure;
// the message is retried and delivered.
func TestDataLoadFailureIsRetried(t *testing.T) {
	data := &flakySpool{Spool: spool.NewMemory()}
	data.failLoads.Store(1)
	var attempts sync.Map
	deliver := func(_ context.Context, d *mta.Delivery) error { attempts.Store(d.ID, d.Attempt); return nil }
	ts := startServer(t, data, spool.NewMemory(), handlerQueue(deliver, 50*time.Millisecond, time.Hour))
	id := inject(t, ts.srv, "r@dest.example")[0]
	waitFor(t, "delivery after the failed load", 5*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	if got := lastTransient(ts.sink, id); !strings.Contains(got, "spool load failed") {
		t.Errorf("transient failure %q, want spool load failed", got)
	}
	if a, _ := attempts.Load(id.String()); a != 2 {
		t.Errorf("delivered on attempt %v, want 2", a)
	}
}

// A meta spool that cannot save the retry state keeps the message queued
// in memory (the old meta stays in the spool for a restart): it is retried
// and delivered, never dropped.
func TestMetaSaveFailureKeepsMessageQueued(t *testing.T) {
	meta := &flakySpool{Spool: spool.NewMemory()}
	var calls atomic.Int32
	deliver := func(context.Context, *mta.Delivery) error {
		if calls.Add(1) == 1 {
			meta.failStores.Store(true) // the update after this failure cannot be saved
			return mta.Reject(451, "4.0.0 later")
		}
		return nil
	}
	ts := startServer(t, spool.NewMemory(), meta, handlerQueue(deliver, 50*time.Millisecond, time.Hour))
	id := inject(t, ts.srv, "r@dest.example")[0]
	waitFor(t, "delivery after the failed meta save", 5*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	checkExactlyOnce(t, ts.sink, map[string]logs.RecordType{id.String(): logs.Delivery})
}
