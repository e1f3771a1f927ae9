package luapolicy

import (
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/mta/loghooks"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
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
	Line                            string
}

// LogHooks returns the log hooks the policy defines.
func (p *Policy) LogHooks() []LogHook {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]LogHook(nil), p.logHooks...)
}

func (s *state) logHooksNewJSON(L *lua.LState) int {
	f := newFields("policy-extras.log_hooks:new_json", s.table(2))
	h := LogHook{RetryInterval: time.Minute, MaxRetryInterval: 20 * time.Minute}
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
		ignored := lf.ignore("per_record", "filter_event", "deferred_spool", "back_pressure")
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

// OpenLogHooks opens a sink per log hook with package mta/loghooks: each
// record is POSTed as JSON (one record per POST, KumoMTA's default
// batch_size) from a durable queue in dir/NAME, retried with the hook's
// queue_config backoff. With dir "" the queue is kept in memory, so
// records not yet sent when the server stops are lost.
func (p *Policy) OpenLogHooks(dir string) ([]logs.Sink, error) {
	var out []logs.Sink
	for _, h := range p.LogHooks() {
		cfg := loghooks.Config{Name: h.Name, URL: h.URL, BatchSize: 1, RetryInterval: h.RetryInterval,
			MaxRetryInterval: h.MaxRetryInterval, Logger: p.log}
		if dir == "" {
			cfg.Queue = spool.NewMemory()
		} else {
			cfg.Dir = filepath.Join(dir, h.Name)
		}
		hook, err := loghooks.Open(cfg)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("luapolicy: %s log hook %s: %w", h.Line, h.Name, err)
		}
		out = append(out, hook)
	}
	return out, nil
}
