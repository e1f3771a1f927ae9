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

func tenantHook(_ context.Context, m *mta.Message) error {
	if t, ok := m.Header("X-Tenant"); ok {
		m.SetMeta(mta.MetaTenant, strings.TrimSpace(t))
	}
	return nil
}

func injectFor(t *testing.T, srv *mta.Server, tenant, rcpt string) spool.ID {
	t.Helper()
	ids, err := srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{rcpt},
		Data: []byte("X-Tenant: " + tenant + "\r\nSubject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

// A suspension holds a tenant's mail without attempts or records; lifting
// it early releases exactly that mail, as first attempts.
func TestSuspendQueuesHoldsAndReleases(t *testing.T) {
	var mu sync.Mutex
	attempts := map[string]int{}
	deliver := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		attempts[d.ID] = d.Attempt
		mu.Unlock()
		return nil
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), handlerQueue(deliver, time.Hour, time.Hour),
		func(o *mta.Options, _ *listener.Config) { o.Policy.MessageReceived = tenantHook })
	rule := ts.srv.SuspendQueues(mta.QueueMatch{Tenant: "acme"}, "warming up", time.Hour)
	held := injectFor(t, ts.srv, "acme", "r@dest.example")
	free := injectFor(t, ts.srv, "other", "r@dest.example")
	waitFor(t, "the other tenant delivered", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return attempts[free.String()] == 1
	})
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	_, early := attempts[held.String()]
	mu.Unlock()
	if early || len(ts.sink.OfType(logs.TransientFailure)) != 0 {
		t.Fatal("suspended tenant's mail was attempted")
	}
	if sus, _ := ts.srv.QueueRules(); len(sus) != 1 || sus[0].ID != rule.ID || sus[0].Reason != "warming up" {
		t.Fatalf("suspensions %+v", sus)
	}
	if !ts.srv.CancelQueueRule(rule.ID) {
		t.Fatal("CancelQueueRule found no rule")
	}
	waitFor(t, "held mail released", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return attempts[held.String()] == 1
	})
}

// A bounce rule bounces what is queued now and, while in force, what
// arrives; each message gets one AdminBounce record and leaves the spool.
func TestBounceQueues(t *testing.T) {
	data, meta := spool.NewMemory(), spool.NewMemory()
	fail := func(context.Context, *mta.Delivery) error { return mta.Reject(451, "4.0.0 later") }
	ts := startServer(t, data, meta, handlerQueue(fail, time.Hour, 24*time.Hour))
	var ids []spool.ID
	for range 3 {
		ids = append(ids, inject(t, ts.srv, "r@doomed.example")[0])
	}
	keep := inject(t, ts.srv, "r@fine.example")[0]
	waitFor(t, "first attempts", 5*time.Second, func() bool { return len(ts.sink.OfType(logs.TransientFailure)) == 4 })
	ts.srv.BounceQueues(mta.QueueMatch{Domain: "doomed.example"}, "list cleanup", time.Minute)
	late := inject(t, ts.srv, "r@doomed.example")[0]
	want := map[string]logs.RecordType{late.String(): logs.AdminBounce}
	for _, id := range ids {
		want[id.String()] = logs.AdminBounce
	}
	waitFor(t, "bounced", 5*time.Second, func() bool { return len(ts.sink.OfType(logs.AdminBounce)) == 4 })
	for _, r := range ts.sink.OfType(logs.AdminBounce) {
		if want[r.ID] != logs.AdminBounce || r.Response.Code != 551 || !strings.Contains(r.Response.Content, "list cleanup") {
			t.Errorf("admin bounce record %s: %d %q", r.ID, r.Response.Code, r.Response.Content)
		}
	}
	if ts.srv.QueuedCount() != 1 || countSpool(t, meta) != 1 {
		t.Errorf("queued %d, meta %d: want only the message to fine.example (%s)", ts.srv.QueuedCount(), countSpool(t, meta), keep)
	}
	if _, bounces := ts.srv.QueueRules(); len(bounces) != 1 || bounces[0].Bounced != 4 {
		t.Errorf("bounce rules %+v, want one that bounced 4", bounces)
	}
}
