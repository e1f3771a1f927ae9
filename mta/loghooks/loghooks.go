// Package loghooks sends log records to an HTTP endpoint, the Go
// counterpart of KumoMTA's log hooks (log_hooks:new_json in the
// policy-extras helpers): batches of records are POSTed as JSON, retried
// with backoff while the endpoint fails, from a durable queue of their
// own so records survive a restart of the server and an outage of the
// receiver.
//
// A Hook is a logs.Sink; combine it with the local log with logs.Multi:
//
//	hook, _ := loghooks.Open(loghooks.Config{URL: "https://collector.example/mtakit", Dir: "data/loghook"})
//	opts.Log = logs.Multi(localLogs, hook)
//
// # Delivery
//
// Log encodes the record and hands it to a writer goroutine, which groups
// records into batches of up to BatchSize, waiting at most
// MaxBatchLatency for a batch to fill, and stores each batch in the
// queue spool (one entry per batch, keyed by a time-ordered spool.ID).
// A sender goroutine POSTs the batches oldest first, one at a time, so
// the receiver sees records in log order: a batch is a JSON array of
// records, or with BatchSize 1 a single record object (as KumoMTA's
// new_json posts), with Content-Type application/json. A 2xx answer
// removes the batch. A connection error, a timeout, 408, 429 or a 5xx
// answer is retried after RetryInterval, doubling up to
// MaxRetryInterval; any other answer drops the batch with an error log,
// since sending it again would not help.
//
// # Guarantees
//
// Delivery is at least once: a crash between the receiver's 2xx and the
// removal of the batch sends it again, so receivers should deduplicate
// by the records' id and type when that matters. Records are durable
// once their batch is stored: Close stores everything pending, so a
// graceful restart loses nothing, while a crash loses the records of at
// most the last MaxBatchLatency that were not yet stored, a window of the
// same order as the local log's unflushed buffer.
//
// # Deviations from KumoMTA
//
// KumoMTA spools each log record as a message in a queue named
// "<name>.log_hook" and delivers it with the queue machinery, and its
// new_json treats every non-2xx answer as permanent; here the hook has
// its own queue spool and retries server errors. Filtering is a Go
// function (Config.Filter) instead of the should_enqueue_log_record
// event.
package loghooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// Defaults for Config fields left zero.
const (
	DefaultBatchSize        = 100
	DefaultMaxBatchLatency  = time.Second
	DefaultRetryInterval    = time.Second
	DefaultMaxRetryInterval = time.Minute
	DefaultTimeout          = 30 * time.Second
)

// Config configures a Hook. URL and one of Dir or Queue are required.
type Config struct {
	// Name identifies the hook in operational logs.
	Name string
	// URL receives the POSTs.
	URL string
	// Headers are added to every request (Authorization, say).
	Headers map[string]string
	// Dir is the directory of the hook's durable queue (a badger spool);
	// ignored when Queue is set.
	Dir string
	// Queue is the durable queue to use instead of one in Dir. The Hook
	// owns it and closes it.
	Queue spool.Spool
	// BatchSize is the most records one POST carries; default
	// DefaultBatchSize. With 1, each POST is one record object rather
	// than an array.
	BatchSize int
	// MaxBatchLatency is how long a record may wait for its batch to
	// fill; default DefaultMaxBatchLatency.
	MaxBatchLatency time.Duration
	// RetryInterval is the first wait after a failed POST, doubled per
	// failure up to MaxRetryInterval.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// Client sends the requests; default an http.Client with
	// DefaultTimeout.
	Client *http.Client
	// Filter, if set, is asked for every record; returning false skips
	// it.
	Filter func(*logs.Record) bool
	// Logger receives delivery failures; nil means slog.Default().
	Logger *slog.Logger
}

// Hook is a logs.Sink that sends records to Config.URL.
type Hook struct {
	cfg   Config
	log   *slog.Logger
	queue spool.Spool

	mu      sync.Mutex
	pending [][]byte // encoded records waiting for the writer
	closed  bool
	kick    chan struct{} // a full batch is pending

	sendMu  sync.Mutex
	batches []spool.ID // stored batches, oldest first
	more    chan struct{}

	stop   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error // the writer's last store error, reported by Log
}

// Open opens the hook's queue, schedules the batches it holds from a
// previous run, and starts sending.
func Open(cfg Config) (*Hook, error) {
	if cfg.URL == "" {
		return nil, errors.New("loghooks: Config.URL is required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.MaxBatchLatency <= 0 {
		cfg.MaxBatchLatency = DefaultMaxBatchLatency
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.MaxRetryInterval < cfg.RetryInterval {
		cfg.MaxRetryInterval = max(DefaultMaxRetryInterval, cfg.RetryInterval)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: DefaultTimeout}
	}
	h := &Hook{cfg: cfg, log: cfg.Logger, queue: cfg.Queue, kick: make(chan struct{}, 1), more: make(chan struct{}, 1), stop: make(chan struct{})}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.log = h.log.With("log_hook", cfg.Name)
	if h.queue == nil {
		if cfg.Dir == "" {
			return nil, errors.New("loghooks: Config.Dir or Config.Queue is required")
		}
		q, err := badgerspool.Open(cfg.Dir, badgerspool.Options{Logger: h.log})
		if err != nil {
			return nil, fmt.Errorf("loghooks: open queue: %w", err)
		}
		h.queue = q
	}
	if err := spool.EnumerateIDs(context.Background(), h.queue, func(id spool.ID) error {
		h.batches = append(h.batches, id)
		return nil
	}); err != nil {
		h.queue.Close()
		return nil, fmt.Errorf("loghooks: recover queue: %w", err)
	}
	if len(h.batches) > 0 {
		h.log.Info("log hook resumes stored batches", "batches", len(h.batches))
	}
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	h.wg.Add(2)
	go h.writeLoop()
	go h.sendLoop(ctx)
	return h, nil
}

// Log queues rec for sending. It reports a failure of an earlier store
// to the durable queue, once.
func (h *Hook) Log(rec *logs.Record) error {
	if h.cfg.Filter != nil && !h.cfg.Filter(rec) {
		return nil
	}
	b, err := rec.MarshalJSON()
	if err != nil {
		return fmt.Errorf("loghooks: encode record: %w", err)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return logs.ErrClosed
	}
	h.pending = append(h.pending, b)
	full := len(h.pending) >= h.cfg.BatchSize
	h.mu.Unlock()
	if full {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
	h.errMu.Lock()
	err, h.err = h.err, nil
	h.errMu.Unlock()
	return err
}

// Close stores the pending records, stops sending (a POST in progress is
// cut and retried at the next start) and closes the queue.
func (h *Hook) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	close(h.stop)
	h.cancel()
	h.wg.Wait()
	h.errMu.Lock()
	err := h.err
	h.errMu.Unlock()
	return errors.Join(err, h.queue.Close())
}

// Pending returns the number of stored batches not yet accepted by the
// receiver.
func (h *Hook) Pending() int {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	return len(h.batches)
}

// writeLoop stores pending records as batches.
func (h *Hook) writeLoop() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.MaxBatchLatency)
	defer t.Stop()
	for {
		select {
		case <-h.kick:
		case <-t.C:
		case <-h.stop:
			h.storePending()
			return
		}
		h.storePending()
	}
}

func (h *Hook) storePending() {
	h.mu.Lock()
	recs := h.pending
	h.pending = nil
	h.mu.Unlock()
	for len(recs) > 0 {
		n := min(len(recs), h.cfg.BatchSize)
		body := encodeBatch(recs[:n], h.cfg.BatchSize == 1)
		recs = recs[n:]
		id := spool.NewID()
		if err := h.queue.Store(context.Background(), id, body); err != nil {
			h.log.Error("log hook cannot store a batch; its records are lost", "records", n, "err", err)
			h.errMu.Lock()
			h.err = fmt.Errorf("loghooks: store batch of %d records: %w", n, err)
			h.errMu.Unlock()
			continue
		}
		h.sendMu.Lock()
		h.batches = append(h.batches, id)
		h.sendMu.Unlock()
		select {
		case h.more <- struct{}{}:
		default:
		}
	}
}

func encodeBatch(recs [][]byte, single bool) []byte {
	if single {
		return recs[0]
	}
	n := 2
	for _, r := range recs {
		n += len(r) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, r := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	return append(b, ']')
}

// sendLoop posts stored batches, oldest first, until Close.
func (h *Hook) sendLoop(ctx context.Context) {
	defer h.wg.Done()
	backoff := h.cfg.RetryInterval
	for {
		h.sendMu.Lock()
		var id spool.ID
		have := len(h.batches) > 0
		if have {
			id = h.batches[0]
		}
		h.sendMu.Unlock()
		if !have {
			select {
			case <-h.more:
				continue
			case <-ctx.Done():
				return
			}
		}
		done, err := h.send(ctx, id)
		if ctx.Err() != nil {
			return
		}
		if !done {
			h.log.Warn("log hook POST failed; will retry", "url", h.cfg.URL, "retry_in", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, h.cfg.MaxRetryInterval)
			continue
		}
		backoff = h.cfg.RetryInterval
		if err != nil {
			h.log.Error("log hook endpoint refused a batch; dropped", "url", h.cfg.URL, "err", err)
		}
		if rerr := h.queue.Remove(context.Background(), id); rerr != nil {
			h.log.Error("log hook cannot remove a sent batch; it may be sent again", "err", rerr)
		}
		h.sendMu.Lock()
		h.batches = h.batches[1:]
		h.sendMu.Unlock()
	}
}

// send posts one batch. done reports whether the batch is finished with:
// accepted, or refused for good (then err says why).
func (h *Hook) send(ctx context.Context, id spool.ID) (done bool, err error) {
	body, err := h.queue.Load(ctx, id)
	if errors.Is(err, spool.ErrNotFound) {
		return true, fmt.Errorf("batch %s vanished from the queue", id)
	}
	if err != nil {
		return false, fmt.Errorf("load batch %s: %w", id, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return true, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		return false, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return true, nil
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return false, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	default:
		return true, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
}
