package luapolicy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/mta/logs"
)

// LogHook is a log_hooks:new_json call: every log record is POSTed as
// JSON to URL.
type LogHook struct {
	Name string
	URL  string
	// Headers and Meta are the log_parameters headers and meta; they are
	// added to the server's LogHeaders and LogMeta (mtakit captures one
	// set for all log sinks).
	Headers, Meta []string
	// RetryInterval and MaxRetryInterval pace retries after a transport
	// error (queue_config; default 1 minute doubling up to 20 minutes).
	RetryInterval, MaxRetryInterval time.Duration
	// BackPressure is how many records may wait to be sent before Log
	// blocks (log_parameters back_pressure; default 128000).
	BackPressure int
	Line         string
}

// LogHooks returns the log hooks the policy defines.
func (p *Policy) LogHooks() []LogHook {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]LogHook(nil), p.logHooks...)
}

func (s *state) logHooksNewJSON(L *lua.LState) int {
	f := newFields("policy-extras.log_hooks:new_json", s.table(2))
	h := LogHook{RetryInterval: time.Minute, MaxRetryInterval: 20 * time.Minute, BackPressure: 128000}
	if !f.str("name", &h.Name) {
		f.fail("name", "required")
	}
	if !f.str("url", &h.URL) {
		f.fail("url", "required")
	} else if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		f.fail("url", "want an http:// or https:// URL")
	}
	if v, ok := f.get("log_parameters"); ok {
		lf := newFields("policy-extras.log_hooks:new_json log_parameters", v)
		lf.strings("headers", &h.Headers)
		lf.strings("meta", &h.Meta)
		lf.integer("back_pressure", &h.BackPressure)
		ignored := lf.ignore("per_record", "filter_event", "deferred_spool")
		s.warnIgnored("policy-extras.log_hooks:new_json log_parameters", ignored)
		if err := lf.done(); err != nil {
			f.errs = append(f.errs, err)
		}
	}
	if v, ok := f.get("queue_config"); ok {
		qf := newFields("policy-extras.log_hooks:new_json queue_config", v)
		qf.duration("retry_interval", &h.RetryInterval)
		qf.duration("max_retry_interval", &h.MaxRetryInterval)
		qf.ignore("max_age", "egress_pool", "max_message_rate")
		if err := qf.done(); err != nil {
			f.errs = append(f.errs, err)
		}
	}
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	if s.primary {
		h.Line = s.where()
		s.p.mu.Lock()
		s.p.logHooks = append(s.p.logHooks, h)
		s.p.mu.Unlock()
	}
	return 0
}

// OpenLogHooks starts a sink per log hook. mtakit keeps the records
// waiting to be sent in memory (KumoMTA spools them as messages), so
// records not yet sent when the server stops are lost.
func (p *Policy) OpenLogHooks() []logs.Sink {
	var out []logs.Sink
	for _, h := range p.LogHooks() {
		out = append(out, newWebhookSink(h, p.log))
	}
	return out
}

// webhookSink POSTs each record, in order, to a URL. A 2xx answer is
// success; any other answer drops the record with an error log, as
// KumoMTA's new_json treats it as a permanent failure; a transport error
// is retried with the hook's backoff.
type webhookSink struct {
	h      LogHook
	log    *slog.Logger
	client *http.Client
	ch     chan []byte
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func newWebhookSink(h LogHook, log *slog.Logger) *webhookSink {
	if h.BackPressure <= 0 {
		h.BackPressure = 128000
	}
	w := &webhookSink{h: h, log: log, client: &http.Client{Timeout: time.Minute}, ch: make(chan []byte, h.BackPressure)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.wg.Add(1)
	go w.run()
	return w
}

// Log queues rec; it blocks while BackPressure records are waiting.
func (w *webhookSink) Log(rec *logs.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("log hook %s: %w", w.h.Name, err)
	}
	select {
	case w.ch <- b:
		return nil
	case <-w.ctx.Done():
		return fmt.Errorf("log hook %s: closed", w.h.Name)
	}
}

// Close sends what is queued for up to 5 seconds, then stops.
func (w *webhookSink) Close() error {
	w.once.Do(func() {
		close(w.ch)
		t := time.AfterFunc(5*time.Second, w.cancel)
		w.wg.Wait()
		t.Stop()
		w.cancel()
	})
	return nil
}

func (w *webhookSink) run() {
	defer w.wg.Done()
	for b := range w.ch {
		delay := w.h.RetryInterval
		for {
			err := w.post(b)
			if err == nil {
				break
			}
			if w.ctx.Err() != nil {
				return
			}
			var perm *permanentError
			if errorsAs(err, &perm) {
				w.log.Error("log hook dropped a record", "hook", w.h.Name, "err", err)
				break
			}
			w.log.Warn("log hook delivery failed; retrying", "hook", w.h.Name, "in", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-w.ctx.Done():
				return
			}
			delay = min(2*delay, w.h.MaxRetryInterval)
		}
	}
}

type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func (w *webhookSink) post(b []byte) error {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, w.h.URL, bytes.NewReader(b))
	if err != nil {
		return &permanentError{err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &permanentError{fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))}
	}
	return nil
}
