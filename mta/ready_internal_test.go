package mta

import (
	"container/heap"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// staleOpener opens sessions that send one message and then, although
// they still look usable, turn out stale: the next Send cannot send at all
// (a peer that closed the idle connection just before reuse).
type staleOpener struct {
	mu        sync.Mutex
	opened    int
	delivered []string
}

func (o *staleOpener) Protocol() string { return "test" }

func (o *staleOpener) Open(context.Context, shaping.PathConfig) (deliverySession, *reply) {
	o.mu.Lock()
	o.opened++
	o.mu.Unlock()
	return &staleSession{o: o}, nil
}

type staleSession struct {
	o    *staleOpener
	sent int
}

func (s *staleSession) Send(_ context.Context, env *envelope) []reply {
	if s.sent++; s.sent > 1 {
		return nil // stale: nothing was sent
	}
	s.o.mu.Lock()
	s.o.delivered = append(s.o.delivered, env.id)
	s.o.mu.Unlock()
	return uniform(reply{Code: 250, Text: "ok"}, len(env.recipients))
}

func (*staleSession) Usable() bool { return true }
func (*staleSession) Close()       {}
func (*staleSession) Peer() (*logs.PeerAddress, *logs.SourceAddress, tlsInfo) {
	return nil, nil, tlsInfo{}
}

// A message taken for a reused session that turns out stale was not
// attempted: it goes back to the front of the ready queue and out on a
// fresh session, with no failure recorded.
func TestStaleReusedSessionRequeuesMessage(t *testing.T) {
	sink := &logs.Memory{}
	srv, err := New(Options{
		DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), Log: sink,
		HoldDelivery: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ids, err := srv.Inject(context.Background(), &Submission{Sender: "s@example.com", Recipients: []string{"a@x.example", "b@x.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	// Take both messages from the (held) scheduler and hand them to one
	// ready queue with the stale-session opener.
	srv.sched.mu.Lock()
	var msgs []*queuedMessage
	for srv.sched.heap.Len() > 0 {
		msgs = append(msgs, heap.Pop(&srv.sched.heap).(*queuedMessage))
	}
	srv.sched.mu.Unlock()
	if len(msgs) != 2 {
		t.Fatalf("%d scheduled messages, want 2", len(msgs))
	}
	o := &staleOpener{}
	cfg := shaping.Default()
	cfg.ConnectionLimit = 1
	cfg.IdleTimeout = time.Second
	for _, m := range msgs {
		srv.enqueueReady("test->x@test", "x", egress.DefaultSource(), "unspecified", o, cfg, m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.QueuedCount() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("message taken for a stale session was lost: %d still queued, delivered %v", srv.QueuedCount(), o.delivered)
		}
		time.Sleep(5 * time.Millisecond)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.delivered) != 2 || o.opened != 2 {
		t.Errorf("delivered %v over %d sessions, want %v over 2", o.delivered, o.opened, ids)
	}
	if tf, d := len(sink.OfType(logs.TransientFailure)), len(sink.OfType(logs.Delivery)); tf != 0 || d != 2 {
		t.Errorf("%d transient failures and %d deliveries, want 2 deliveries and no failure", tf, d)
	}
}
