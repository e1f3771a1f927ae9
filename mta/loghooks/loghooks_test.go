package loghooks_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta/loghooks"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// receiver is a webhook endpoint on a fixed loopback address that can be
// taken down and brought back.
type receiver struct {
	t    *testing.T
	addr string

	mu       sync.Mutex
	ids      []string // record IDs in arrival order, duplicates included
	posts    int
	failNext int // answer 503 to this many more POSTs
	status   int // answer this instead of 200 when set
	srv      *http.Server
}

func newReceiver(t *testing.T) *receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, addr: ln.Addr().String()}
	r.serve(ln)
	t.Cleanup(r.down)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hook" }

func (r *receiver) serve(ln net.Listener) {
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.posts++
		if req.Header.Get("Content-Type") != "application/json" || req.Header.Get("X-Token") != "t0k" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if r.failNext > 0 {
			r.failNext--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.status != 0 {
			w.WriteHeader(r.status)
			return
		}
		var batch []logs.Record
		if err := json.Unmarshal(body, &batch); err != nil {
			var one logs.Record
			if err := json.Unmarshal(body, &one); err != nil {
				r.t.Errorf("receiver: bad body %q: %v", body, err)
				return
			}
			batch = []logs.Record{one}
		}
		for _, rec := range batch {
			r.ids = append(r.ids, rec.ID)
		}
	})}
	go r.srv.Serve(ln)
}

func (r *receiver) down() { r.srv.Close() }

func (r *receiver) up() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve(ln)
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

func openHook(t *testing.T, cfg loghooks.Config) *loghooks.Hook {
	t.Helper()
	cfg.Headers = map[string]string{"X-Token": "t0k"}
	cfg.RetryInterval = 20 * time.Millisecond
	cfg.MaxRetryInterval = 100 * time.Millisecond
	cfg.MaxBatchLatency = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := loghooks.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func logRecords(t *testing.T, h *loghooks.Hook, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		rec := &logs.Record{Type: logs.Delivery, ID: fmt.Sprintf("r%04d", i), Queue: "q"}
		rec.SetTimes(time.Now(), time.Now())
		if err := h.Log(rec); err != nil {
			t.Fatal(err)
		}
	}
}

// checkAll asserts every record from..to arrived, in order, at least once.
func checkAll(t *testing.T, r *receiver, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := map[string]bool{}
		for _, id := range r.received() {
			seen[id] = true
		}
		if len(seen) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d of %d records", len(seen), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// First arrivals are in log order.
	next := 0
	for _, id := range r.received() {
		if id == fmt.Sprintf("r%04d", next) {
			next++
		}
	}
	if next != n {
		t.Errorf("records out of order: %v", r.received())
	}
}

func TestBatchesWithRetryAcrossOutage(t *testing.T) {
	for _, batch := range []int{1, 7} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			r := newReceiver(t)
			h := openHook(t, loghooks.Config{URL: r.url(), Queue: spool.NewMemory(), BatchSize: batch})
			defer h.Close()
			r.mu.Lock()
			r.failNext = 3 // server errors are retried
			r.mu.Unlock()
			logRecords(t, h, 0, 20)
			checkAll(t, r, 20)

			r.down() // unreachable receiver
			logRecords(t, h, 20, 50)
			time.Sleep(150 * time.Millisecond)
			if h.Pending() == 0 {
				t.Fatal("nothing pending while the receiver is down")
			}
			r.up()
			checkAll(t, r, 50)
			if batch > 1 {
				r.mu.Lock()
				posts := r.posts
				r.mu.Unlock()
				if posts >= 50 {
					t.Errorf("%d POSTs for 50 records: not batched", posts)
				}
			}
		})
	}
}

func TestRecordsSurviveRestart(t *testing.T) {
	r := newReceiver(t)
	r.down()
	dir := t.TempDir()
	h := openHook(t, loghooks.Config{URL: r.url(), Dir: dir, BatchSize: 10})
	logRecords(t, h, 0, 35)
	if err := h.Close(); err != nil { // stores what is pending
		t.Fatal(err)
	}
	r.up()
	h = openHook(t, loghooks.Config{URL: r.url(), Dir: dir, BatchSize: 10})
	defer h.Close()
	logRecords(t, h, 35, 40)
	checkAll(t, r, 40)
	deadline := time.Now().Add(5 * time.Second)
	for h.Pending() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.Pending(); n != 0 {
		t.Errorf("%d batches still pending after delivery", n)
	}
}

func TestRefusedBatchIsDroppedAndFilter(t *testing.T) {
	r := newReceiver(t)
	r.mu.Lock()
	r.status = http.StatusUnprocessableEntity
	r.mu.Unlock()
	h := openHook(t, loghooks.Config{URL: r.url(), Queue: spool.NewMemory(), BatchSize: 5, Filter: func(rec *logs.Record) bool { return rec.ID != "r0001" }})
	defer h.Close()
	logRecords(t, h, 0, 5)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		posts := r.posts
		r.mu.Unlock()
		if posts >= 1 && h.Pending() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("refused batch not dropped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	r.status = 0
	r.mu.Unlock()
	logRecords(t, h, 0, 3)
	deadline = time.Now().Add(5 * time.Second)
	for len(r.received()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := fmt.Sprint(r.received()); got != "[r0000 r0002]" {
		t.Errorf("received %s, want the filtered records only", got)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, cfg := range []loghooks.Config{{}, {URL: "http://127.0.0.1:1/"}} {
		if _, err := loghooks.Open(cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}
