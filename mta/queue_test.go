package mta_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// handlerQueue configures every queue to deliver through fn, with short
// retry intervals.
func handlerQueue(fn mta.DeliverFunc, retry, maxAge time.Duration) serverOpt {
	return func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = false
		o.Policy.QueueConfig = func(queue, campaign, tenant, domain, routing string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: retry, MaxAge: maxAge, Protocol: mta.Protocol{Deliver: fn}}, nil
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finals counts the final records (Delivery, Bounce, Expiration) per ID.
func finals(sink *memSink) map[string][]logs.RecordType {
	out := map[string][]logs.RecordType{}
	for _, r := range sink.Records() {
		switch r.Type {
		case logs.Delivery, logs.Bounce, logs.Expiration:
			out[r.ID] = append(out[r.ID], r.Type)
		}
	}
	return out
}

func TestHandlerDeliversEveryMessageOnce(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	deliver := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		got[d.ID]++
		mu.Unlock()
		return nil
	}
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta, handlerQueue(deliver, time.Second, time.Hour))
	const n = 60
	var ids []string
	for c := 0; c < 3; c++ {
		rc := dialRaw(t, ts.addr)
		ehlo(rc)
		for i := 0; i < n/3; i++ {
			ids = append(ids, sendMail(t, rc, "s@example.com", []string{"r@dest.example"}, testMessage("m", "x"))...)
		}
	}
	waitFor(t, "all delivered", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	f := finals(ts.sink)
	for _, id := range ids {
		if len(f[id]) != 1 || f[id][0] != logs.Delivery || got[id] != 1 {
			t.Errorf("%s: finals %v, handler calls %d", id, f[id], got[id])
		}
	}
	if countSpool(t, data)+countSpool(t, meta) != 0 {
		t.Error("delivered messages left in the spool")
	}
	d := ts.sink.OfType(logs.Delivery)[0]
	if d.NumAttempts != 1 || d.Site != "unspecified->dest.example@go" || d.EgressSource == nil || *d.EgressSource != "unspecified" ||
		d.EgressPool == nil || *d.EgressPool != "unspecified" || d.DeliveryProtocol == nil || *d.DeliveryProtocol != "Go" || d.Queue != "dest.example" {
		t.Errorf("delivery record %+v", d)
	}
}

func TestRetryWithBackoffThenDeliver(t *testing.T) {
	var mu sync.Mutex
	var attempts []time.Time
	deliver := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		if d.Attempt < 3 {
			return mta.Reject(451, "4.2.1 try later")
		}
		return nil
	}
	const retry = 100 * time.Millisecond
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), handlerQueue(deliver, retry, time.Hour))
	id := ts.srv
	_ = id
	ids, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	tf := ts.sink.OfType(logs.TransientFailure)
	if len(tf) != 2 || tf[0].NumAttempts != 1 || tf[1].NumAttempts != 2 || tf[0].Response.Code != 451 || tf[0].Response.Content != "try later" {
		t.Fatalf("transient failures %+v", tf)
	}
	if f := finals(ts.sink)[ids[0].String()]; len(f) != 1 || f[0] != logs.Delivery {
		t.Fatalf("finals %v", f)
	}
	if d := ts.sink.OfType(logs.Delivery)[0]; d.NumAttempts != 3 {
		t.Errorf("delivery num_attempts %d, want 3", d.NumAttempts)
	}
	// Backoff doubles: ~retry, then ~2*retry (jitter is at most retry/40).
	mu.Lock()
	defer mu.Unlock()
	if g := attempts[1].Sub(attempts[0]); g < retry*9/10 {
		t.Errorf("first retry after %v, want about %v", g, retry)
	}
	if g := attempts[2].Sub(attempts[1]); g < 2*retry*9/10 {
		t.Errorf("second retry after %v, want about %v", g, 2*retry)
	}
}

func TestPermanentFailureBounces(t *testing.T) {
	deliver := func(context.Context, *mta.Delivery) error { return mta.Reject(550, "5.1.1 no such user") }
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta, handlerQueue(deliver, time.Second, time.Hour))
	ids, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"nobody@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bounce", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	b := ts.sink.OfType(logs.Bounce)
	if len(b) != 1 || b[0].ID != ids[0].String() || b[0].Response.Code != 550 || b[0].Recipient[0] != "nobody@dest.example" {
		t.Fatalf("bounces %+v", b)
	}
	if countSpool(t, data)+countSpool(t, meta) != 0 {
		t.Error("bounced message left in the spool")
	}
}

func TestExpiration(t *testing.T) {
	deliver := func(context.Context, *mta.Delivery) error { return mta.Reject(421, "4.7.0 busy") }
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), handlerQueue(deliver, 50*time.Millisecond, 300*time.Millisecond))
	ids, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "expiration", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	e := ts.sink.OfType(logs.Expiration)
	if len(e) != 1 || e[0].ID != ids[0].String() || e[0].Response.Code != 551 ||
		!strings.Contains(e[0].Response.Content, "exceeds max_age=300ms") {
		t.Fatalf("expirations %+v", e)
	}
	if n := len(ts.sink.OfType(logs.TransientFailure)); n < 2 {
		t.Errorf("want several transient failures before expiry, got %d", n)
	}
	if f := finals(ts.sink)[ids[0].String()]; len(f) != 1 {
		t.Errorf("finals %v", f)
	}
}

// A message's retry state survives a restart: attempts and due time come
// back from the meta spool.
func TestRetryStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	fail := func(context.Context, *mta.Delivery) error { return mta.Reject(451, "4.0.0 later") }
	ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"), handlerQueue(fail, 200*time.Millisecond, time.Hour))
	ids, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first failure", 10*time.Second, func() bool { return len(ts.sink.OfType(logs.TransientFailure)) >= 1 })
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	var attempt int
	var mu sync.Mutex
	ok := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		attempt = d.Attempt
		mu.Unlock()
		return nil
	}
	ts2 := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"), handlerQueue(ok, 200*time.Millisecond, time.Hour))
	waitFor(t, "delivery after restart", 10*time.Second, func() bool { return ts2.srv.QueuedCount() == 0 })
	d := ts2.sink.OfType(logs.Delivery)
	mu.Lock()
	defer mu.Unlock()
	if len(d) != 1 || d[0].ID != ids[0].String() || attempt < 2 || d[0].NumAttempts != attempt {
		t.Fatalf("after restart: deliveries %+v, attempt %d", d, attempt)
	}
}

// A scheduled queue's max_message_rate paces its release for delivery
// (held messages wait without an attempt being counted).
func TestQueueMaxMessageRate(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	deliver := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if d.Attempt != 1 {
			t.Errorf("attempt %d, want every message delivered on its first", d.Attempt)
		}
		at = append(at, time.Now())
		return nil
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{MaxMessageRate: "20/s,max_burst=1", Protocol: mta.Protocol{Deliver: deliver}}, nil
		}
	})
	const n = 21
	for range n {
		if _, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")}); err != nil {
			t.Fatal(err)
		}
	}
	ts.srv.ReleaseDelivery()
	waitFor(t, "all delivered", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	mu.Lock()
	defer mu.Unlock()
	span := at[len(at)-1].Sub(at[0])
	// The limit must hold; a loaded machine may deliver slower, so the
	// lower bound only shows the queue is paced rather than stalled.
	if rate := float64(n-1) / span.Seconds(); rate > 22 || rate < 10 {
		t.Errorf("%d messages over %v: %.1f/s, want at most about 20/s, and not stalled", n, span, rate)
	}
}
