package mta_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// pathOpt sets the shaper to the default path config adjusted by edit.
func pathOpt(edit func(*shaping.PathConfig)) serverOpt {
	return func(o *mta.Options, _ *listener.Config) {
		o.Shaper = shaping.PathFunc(func(context.Context, string, string, string) (shaping.PathConfig, error) {
			pc := shaping.Default()
			edit(&pc)
			return pc, nil
		})
	}
}

func inject(t *testing.T, srv *mta.Server, rcpts ...string) []spool.ID {
	t.Helper()
	ids, err := srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: rcpts, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A message pushed while the only worker of a ready queue at its
// connection limit is on its way out must still be delivered: the worker
// used to count itself out only after finding the queue empty, and a push
// in that gap started no worker, stranding the message.
func TestNoMessageStrandedWhileWorkerExits(t *testing.T) {
	delivered := make(chan string, 1)
	deliver := func(_ context.Context, d *mta.Delivery) error {
		delivered <- d.ID
		return nil
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(),
		handlerQueue(deliver, time.Hour, time.Hour),
		pathOpt(func(pc *shaping.PathConfig) {
			pc.ConnectionLimit = 1
			pc.IdleTimeout = 0 // every worker exits as soon as the queue is empty
		}))
	deadline := time.Now().Add(15 * time.Second)
	n := 0
	for ; n < 20000 && time.Now().Before(deadline); n++ {
		id := inject(t, ts.srv, "r@dest.example")[0]
		select {
		case got := <-delivered:
			if got != id.String() {
				t.Fatalf("delivered %s, want %s", got, id)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("message %d (%s) stranded in its ready queue: %+v", n, id, ts.srv.ReadyQueues())
		}
	}
	t.Logf("%d messages, each pushed as the previous worker left", n)
}

// blockingDeliverer delivers after release is closed, or fails with the
// context's error when the server cancels it.
type blockingDeliverer struct {
	started chan string
	release chan struct{}
	calls   atomic.Int32
}

func newBlockingDeliverer() *blockingDeliverer {
	return &blockingDeliverer{started: make(chan string, 100), release: make(chan struct{})}
}

func (b *blockingDeliverer) deliver(ctx context.Context, d *mta.Delivery) error {
	b.calls.Add(1)
	b.started <- d.ID
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// restartAndCollect reopens the badger spools in dir and returns the
// Attempt numbers the deliverer sees, per message ID, once n messages are
// delivered. The retry interval is an hour, so a message charged an
// attempt at shutdown would not come back in time.
func restartAndCollect(t *testing.T, dir string, n int) (map[string]int, *testServer) {
	t.Helper()
	var mu sync.Mutex
	attempts := map[string]int{}
	ok := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		attempts[d.ID] = d.Attempt
		mu.Unlock()
		return nil
	}
	ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"), handlerQueue(ok, time.Hour, 24*time.Hour))
	waitFor(t, "delivery after restart", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts) == n
	})
	mu.Lock()
	defer mu.Unlock()
	out := map[string]int{}
	for k, v := range attempts {
		out[k] = v
	}
	return out, ts
}

// Graceful Shutdown finishes the deliveries in progress and starts no new
// ones; the messages left waiting keep their state.
func TestShutdownFinishesOnlyDeliveriesInProgress(t *testing.T) {
	dir := t.TempDir()
	b := newBlockingDeliverer()
	ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"),
		handlerQueue(b.deliver, time.Hour, 24*time.Hour),
		pathOpt(func(pc *shaping.PathConfig) { pc.ConnectionLimit = 1 }))
	const n = 30
	var ids []string
	for range n {
		ids = append(ids, inject(t, ts.srv, "r@dest.example")[0].String())
	}
	first := <-b.started
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // let Shutdown stop the queues
	close(b.release)                  // the delivery in progress completes
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if c := b.calls.Load(); c != 1 {
		t.Errorf("deliverer called %d times during shutdown, want only the delivery in progress", c)
	}
	if d := ts.sink.OfType(logs.Delivery); len(d) != 1 || d[0].ID != first {
		t.Errorf("%d deliveries before restart, want only %s", len(d), first)
	}
	if tf := ts.sink.OfType(logs.TransientFailure); len(tf) != 0 {
		t.Errorf("%d transient failures logged for messages that were never tried", len(tf))
	}

	attempts, _ := restartAndCollect(t, dir, n-1)
	for _, id := range ids {
		if id == first {
			continue
		}
		if a, ok := attempts[id]; !ok || a != 1 {
			t.Errorf("%s: after restart attempt %d (delivered %v), want first attempt", id, a, ok)
		}
	}
}

// Close (and a Shutdown whose context expires) aborts the delivery in
// progress, but messages that were never tried get no record and no
// attempt: after a restart they go out at once as first attempts.
func TestCloseChargesNoAttemptToUntriedMessages(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown with expired context"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			b := newBlockingDeliverer()
			ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"),
				handlerQueue(b.deliver, time.Hour, 24*time.Hour),
				pathOpt(func(pc *shaping.PathConfig) { pc.ConnectionLimit = 2 }))
			const n = 20
			for range n {
				inject(t, ts.srv, "r@dest.example")
			}
			inFlight := map[string]bool{<-b.started: true, <-b.started: true}
			if how == "Close" {
				if err := ts.srv.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				if err := ts.srv.Shutdown(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if c := b.calls.Load(); c != 2 {
				t.Errorf("deliverer called %d times, want the 2 in flight", c)
			}
			tf := ts.sink.OfType(logs.TransientFailure)
			for _, r := range tf {
				if !inFlight[r.ID] {
					t.Errorf("transient failure logged for %s, which was never tried", r.ID)
				}
			}
			// The two cut in flight were attempted and wait for their
			// retry; the others go out at once as first attempts.
			attempts, _ := restartAndCollect(t, dir, n-2)
			for id, a := range attempts {
				if inFlight[id] || a != 1 {
					t.Errorf("%s: attempt %d after restart (in flight before: %v), want an untried message's first attempt", id, a, inFlight[id])
				}
			}
		})
	}
}

// Ready queues exist only while they have work: after mail to many
// domains is delivered and the workers' idle timeout passes, none remain.
func TestIdleReadyQueuesAreRemoved(t *testing.T) {
	var delivered atomic.Int32
	deliver := func(context.Context, *mta.Delivery) error { delivered.Add(1); return nil }
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(),
		handlerQueue(deliver, time.Hour, time.Hour),
		pathOpt(func(pc *shaping.PathConfig) { pc.IdleTimeout = 20 * time.Millisecond }))
	const domains = 300
	for i := range domains {
		inject(t, ts.srv, fmt.Sprintf("r@d%d.example", i), fmt.Sprintf("q@d%d.example", i))
	}
	waitFor(t, "all delivered", 10*time.Second, func() bool { return delivered.Load() == 2*domains })
	waitFor(t, "idle ready queues removed", 5*time.Second, func() bool { return len(ts.srv.ReadyQueues()) == 0 })

	// A destination whose queue was removed gets a new one on demand.
	inject(t, ts.srv, "again@d1.example")
	waitFor(t, "delivery to a reaped destination", 5*time.Second, func() bool { return delivered.Load() == 2*domains+1 })
}

// hangingPeer accepts SMTP connections and never says a word.
func hangingPeer(t *testing.T) (port int, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	port, _ = strconv.Atoi(p)
	return port, accepted
}

// A peer that accepts the connection and then never answers cannot hold
// mail past max_age (KumoMTA issue 539): the stalled ready queue gives its
// messages back to the scheduled queue, and every message ends expired.
func TestStalledReadyQueueHonoursMaxAge(t *testing.T) {
	port, accepted := hangingPeer(t)
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = false
		o.StallTimeout = 300 * time.Millisecond
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: 200 * time.Millisecond, MaxAge: 2 * time.Second, Protocol: mta.Protocol{MXList: []string{"127.0.0.1"}}}, nil
		}
	}, pathOpt(func(pc *shaping.PathConfig) {
		pc.ProhibitedHosts = []netip.Prefix{} // empty, not nil: allow loopback
		pc.SMTPPort = port
		pc.ConnectionLimit = 1
		// Timeouts far beyond max_age: only the stall watchdog can act.
		pc.ConnectTimeout, pc.BannerTimeout = time.Hour, time.Hour
	}))
	const n = 5
	ids := map[string]bool{}
	for range n {
		ids[inject(t, ts.srv, "r@hang.example")[0].String()] = true
	}
	waitFor(t, "every message expired", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	want := map[string]logs.RecordType{}
	for id := range ids {
		want[id] = logs.Expiration
	}
	checkExactlyOnce(t, ts.sink, want)
	var stalled int
	for _, r := range ts.sink.OfType(logs.TransientFailure) {
		if strings.Contains(r.Response.Content, "no progress") {
			stalled++
		}
	}
	if stalled == 0 || accepted.Load() == 0 {
		t.Errorf("%d stall failures, %d connections: the watchdog did not act", stalled, accepted.Load())
	}
}

// A ready queue held back by its own max_message_rate is not stalled: the
// watchdog leaves it alone however long the throttle makes it wait.
func TestThrottledQueueIsNotStalled(t *testing.T) {
	var delivered atomic.Int32
	deliver := func(context.Context, *mta.Delivery) error { delivered.Add(1); return nil }
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(),
		handlerQueue(deliver, time.Hour, time.Hour),
		pathOpt(func(pc *shaping.PathConfig) {
			pc.ConnectionLimit = 1
			pc.MaxMessageRate = "4/s,max_burst=1"
		}),
		func(o *mta.Options, _ *listener.Config) { o.StallTimeout = 100 * time.Millisecond })
	for range 5 {
		inject(t, ts.srv, "r@dest.example")
	}
	waitFor(t, "all delivered", 10*time.Second, func() bool { return delivered.Load() == 5 })
	if n := len(ts.sink.OfType(logs.TransientFailure)); n != 0 {
		t.Errorf("%d transient failures: the watchdog took a throttled queue for a stalled one", n)
	}
}
