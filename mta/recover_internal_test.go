package mta

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// logCapture keeps the messages and "id" attributes of error records.
type logCapture struct {
	mu  sync.Mutex
	ids map[string]string // id -> message
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCapture) WithGroup(string) slog.Handler            { return c }
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "id" {
			c.mu.Lock()
			c.ids[a.Value.String()] = r.Message
			c.mu.Unlock()
		}
		return true
	})
	return nil
}

// TestRecoverRestoresScheduleState spools a mix of version 1 (JSON) and
// version 2 entries in a real badger spool pair and checks that recovery
// brings back every message with its due time, attempt count, envelope
// and queue, in due order, and reports and leaves in place the entries it
// cannot read.
func TestRecoverRestoresScheduleState(t *testing.T) {
	const n = 3000
	ctx := context.Background()
	data, meta, err := badgerspool.OpenPair(t.TempDir(), badgerspool.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	want := map[spool.ID]*storedMeta{}
	entries := map[spool.ID][]byte{}
	for i := range n {
		id := spool.NewID()
		sm := &storedMeta{
			Sender:     fmt.Sprintf("s%d@sender.example", i%17),
			Recipients: []string{fmt.Sprintf("r%d@d%d.example", i, i%5)},
			Meta: map[string]any{MetaReceptionProtocol: "ESMTP", MetaReceivedFrom: fmt.Sprintf("127.0.0.1:%d", 1024+i),
				MetaTenant: fmt.Sprintf("t%d", i%3), "x_n": float64(i), "x_nested": map[string]any{"a": []any{1.0, "b"}}},
			NumAttempts: rng.IntN(10),
		}
		switch i % 4 {
		case 0: // due at once
		case 1:
			sm.Due = now.Add(-time.Duration(rng.IntN(3600)) * time.Second)
		default:
			sm.Due = now.Add(time.Duration(rng.Int64N(int64(48 * time.Hour))))
		}
		if i%7 == 0 {
			sm.Body = spool.NewID()
			sm.Recipients = append(sm.Recipients, "second@d0.example")
		}
		if i%11 == 0 {
			sm.Meta[MetaQueue] = "custom"
		}
		var b []byte
		if i%3 == 0 { // as mtakit before the binary form wrote it
			c := *sm
			c.Version = metaVersionJSON
			b, err = json.Marshal(&c)
		} else {
			b, err = encodeMeta(sm)
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[id] = b
		want[id] = sm
	}
	// Stored concurrently, so that group commits share the syncs.
	var wg sync.WaitGroup
	work := make(chan spool.ID)
	for range 32 {
		wg.Go(func() {
			for id := range work {
				if err := meta.Store(ctx, id, entries[id]); err != nil {
					t.Error(err)
				}
				if err := data.Store(ctx, id, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for id := range entries {
		work <- id
	}
	close(work)
	wg.Wait()
	bad := map[spool.ID][]byte{
		spool.NewID(): {3, 0, 0},            // a version from the future
		spool.NewID(): {2, 0, 0, 0, 5, 'a'}, // truncated
		spool.NewID(): []byte(`{"v":1,"sender":`),
	}
	for id, b := range bad {
		if err := meta.Store(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}

	capture := &logCapture{ids: map[string]string{}}
	srv, err := New(Options{DataSpool: data, MetaSpool: meta, HoldDelivery: true, Logger: slog.New(capture)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if got := srv.QueuedCount(); got != n {
		t.Fatalf("recovered %d, want %d", got, n)
	}
	srv.sched.mu.Lock()
	defer srv.sched.mu.Unlock()
	for id, sm := range want {
		m := srv.sched.live[id]
		if m == nil {
			t.Fatalf("%s not recovered", id)
		}
		if !m.dueTime().Equal(sm.Due) || m.dueTime().IsZero() != sm.Due.IsZero() || m.numAttempts() != sm.NumAttempts {
			t.Errorf("%s: due %v attempts %d, want %v %d", id, m.dueTime(), m.numAttempts(), sm.Due, sm.NumAttempts)
		}
		msg := &Message{id: id, sender: sm.Sender, recipients: sm.Recipients, meta: sm.Meta}
		if m.queue != msg.QueueName() || m.sender() != sm.Sender || !slices.Equal(m.recipients(), sm.Recipients) || m.bodyID() != sm.Body {
			t.Errorf("%s: queue %q sender %q rcpts %q body %s; want %q %q %q %s", id, m.queue, m.sender(), m.recipients(), m.bodyID(), msg.QueueName(), sm.Sender, sm.Recipients, sm.Body)
		}
	}
	h := srv.sched.heap
	for i := 1; i < len(h); i++ {
		if h.Less(i, (i-1)/2) {
			t.Fatalf("heap out of order at %d", i)
		}
		if int(h[i].index) != i {
			t.Fatalf("heap index %d at %d", h[i].index, i)
		}
	}
	capture.mu.Lock()
	defer capture.mu.Unlock()
	for id := range bad {
		if msg := capture.ids[id.String()]; !strings.Contains(msg, "left in place") {
			t.Errorf("%s: logged %q, want it reported as left in place", id, msg)
		}
		if _, err := meta.Load(ctx, id); err != nil {
			t.Errorf("%s: %v; unreadable meta must stay in the spool", id, err)
		}
	}
}

// TestQueuedMessageHeap bounds the Go heap a queued message costs (its
// handle, packed meta and scheduler entries) with the meta reception
// writes, made as reception and as recovery make them. The decoded maps
// this replaced cost about 1.7 KB after a restart.
func TestQueuedMessageHeap(t *testing.T) {
	const n = 20000
	const limit = 512 // bytes per message
	for _, how := range []string{"reception", "recovery"} {
		t.Run(how, func(t *testing.T) {
			// The metas and their encodings exist before and after the
			// measurement; only what the loop keeps is counted.
			metas := make([]*storedMeta, n)
			encoded := make([][]byte, n)
			ids := make([]spool.ID, n)
			for i := range n {
				ids[i] = spool.NewID()
				metas[i] = &storedMeta{
					Sender:     fmt.Sprintf("bounce-%d@sender.example", i%20),
					Recipients: []string{fmt.Sprintf("user%d@domain%d.example", i, i%50)},
					Meta: map[string]any{
						MetaReceptionProtocol: "ESMTP", MetaReceivedVia: "127.0.0.1:2525", MetaReceivedFrom: fmt.Sprintf("127.0.0.1:%d", 1024+i%60000),
						MetaHostname: "mx.example.com", MetaEHLODomain: "client.example.org", MetaTLSCipher: "TLS_AES_128_GCM_SHA256",
						MetaTLSVersion: "TLSv1.3", MetaTenant: fmt.Sprintf("tenant-%d", i%10), MetaCampaign: fmt.Sprintf("campaign-%d", i%7),
					},
					Headers: map[string]any{"Subject": fmt.Sprintf("Offer %d for you", i%100), "Message-ID": fmt.Sprintf("<%d.%d@sender.example>", i, i*7)},
				}
				b, err := encodeMeta(metas[i])
				if err != nil {
					t.Fatal(err)
				}
				encoded[i] = b
			}
			s := newScheduler()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range n {
				var m *queuedMessage
				var err error
				if how == "reception" {
					m, err = newQueuedMessage(ids[i], metas[i])
				} else {
					// Enumerate hands each entry in a buffer of its own.
					m, err = queuedFromSpool(ids[i], bytes.Clone(encoded[i]), nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				s.add(m)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(metas)
			runtime.KeepAlive(encoded)
			per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			t.Logf("%s: %d bytes of heap per queued message", how, per)
			if per > limit {
				t.Errorf("%d bytes of heap per queued message, want at most %d", per, limit)
			}
			runtime.KeepAlive(s)
		})
	}
}
