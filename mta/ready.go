package mta

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
)

// reply is a response to one recipient or one message.
type reply struct {
	Code     int
	Enhanced [3]int // zero when the peer sent none
	Text     string
	Command  string
}

func (r reply) transient() bool { return r.Code < 500 }
func (r reply) success() bool   { return r.Code >= 200 && r.Code < 300 }

// envelope is what a delivery session sends.
type envelope struct {
	id         string
	sender     string
	recipients []string
	data       []byte
	queue      string
	attempt    int
}

// deliverySession is one open way to a destination: an SMTP connection or
// a Go delivery function. Send returns one reply per recipient.
type deliverySession interface {
	Send(ctx context.Context, env *envelope) []reply
	// Usable reports whether more messages may be sent on the session.
	Usable() bool
	Close()
	// Peer describes the other end for log records.
	Peer() (*logs.PeerAddress, *logs.SourceAddress, tlsInfo)
}

type tlsInfo struct{ cipher, version string }

// sessionOpener opens sessions for one ready queue. A failed open returns
// the reply that each message taken for it gets.
type sessionOpener interface {
	Open(ctx context.Context, cfg shaping.PathConfig) (deliverySession, *reply)
	Protocol() string // delivery_protocol in log records
}

// readyQueue holds messages ready for delivery to one site from one
// egress source, and runs up to connection_limit delivery workers.
type readyQueue struct {
	srv    *Server
	name   string // source->site@proto, KumoMTA's ready queue name
	site   string
	source egress.EgressSource
	pool   string
	opener sessionOpener
	cfg    shaping.PathConfig

	mu       sync.Mutex
	msgs     []*queuedMessage
	workers  int
	idle     int // workers waiting for a message
	notify   chan struct{}
	limiter  *rate.Limiter
	failures int // consecutive connection failures
}

func (s *Server) readyQueueFor(name, site string, source egress.EgressSource, pool string, opener sessionOpener, cfg shaping.PathConfig) *readyQueue {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	rq := s.ready[name]
	if rq == nil {
		rq = &readyQueue{srv: s, name: name, site: site, source: source, pool: pool, opener: opener, notify: make(chan struct{}, 1)}
		s.ready[name] = rq
	}
	rq.mu.Lock()
	rq.opener = opener // the newest resolution wins: MX sets change
	rq.cfg = cfg
	lim, err := limiterFor(rq.limiter, cfg.MaxMessageRate)
	if err != nil {
		s.log.Warn("invalid max_message_rate from the shaper; sending unthrottled", "ready_queue", name, "err", err)
	}
	rq.limiter = lim
	rq.mu.Unlock()
	return rq
}

// push adds a message and starts a worker when none is free.
func (rq *readyQueue) push(m *queuedMessage) {
	rq.mu.Lock()
	rq.msgs = append(rq.msgs, m)
	start := rq.idle == 0 && rq.workers < max(rq.cfg.ConnectionLimit, 1)
	if start {
		rq.workers++
	}
	rq.mu.Unlock()
	select {
	case rq.notify <- struct{}{}:
	default:
	}
	if start {
		rq.srv.workers.Add(1)
		go rq.work()
	}
}

// pushFront returns a message that was taken but not attempted.
func (rq *readyQueue) pushFront(m *queuedMessage) {
	rq.mu.Lock()
	rq.msgs = append([]*queuedMessage{m}, rq.msgs...)
	rq.mu.Unlock()
}

// take returns the next message, waiting up to idle for one; nil when
// none came or the server is stopping.
func (rq *readyQueue) take(idle time.Duration) *queuedMessage {
	deadline := time.Now().Add(idle)
	for {
		rq.mu.Lock()
		if len(rq.msgs) > 0 {
			m := rq.msgs[0]
			rq.msgs[0] = nil
			rq.msgs = rq.msgs[1:]
			rq.mu.Unlock()
			return m
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			rq.mu.Unlock()
			return nil
		}
		rq.idle++
		rq.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-rq.notify:
		case <-t.C:
		case <-rq.srv.stopping:
		}
		t.Stop()
		rq.mu.Lock()
		rq.idle--
		rq.mu.Unlock()
		select {
		case <-rq.srv.stopping:
			return nil
		default:
		}
	}
}

// work is one delivery worker: it opens a session, sends messages until
// the queue is idle, the session is spent or broken, then closes it.
func (rq *readyQueue) work() {
	defer rq.srv.workers.Done()
	defer func() {
		rq.mu.Lock()
		rq.workers--
		rq.mu.Unlock()
	}()
	ctx := rq.srv.runCtx
	for {
		m := rq.take(0)
		if m == nil {
			return
		}
		rq.mu.Lock()
		cfg, opener, limiter := rq.cfg, rq.opener, rq.limiter
		rq.mu.Unlock()

		sess, fail := opener.Open(ctx, cfg)
		if fail != nil {
			rq.connectionFailed(m, *fail, opener.Protocol())
			continue
		}
		rq.mu.Lock()
		rq.failures = 0
		rq.mu.Unlock()

		sent := 0
		for m != nil {
			if limiter != nil {
				if err := limiter.Wait(ctx); err != nil {
					rq.srv.requeueUnattempted(m)
					sess.Close()
					return
				}
			}
			if !rq.srv.deliverOne(ctx, rq, sess, m, opener.Protocol()) {
				if sent == 0 {
					// A fresh session that cannot send is a connection
					// failure; counting it keeps a flapping peer from
					// making us reconnect in a tight loop.
					rq.connectionFailed(m, internalReply(451, "4.4.2", "connection became unusable before the transaction"), opener.Protocol())
				} else {
					rq.pushFront(m) // the reused session went stale: retry on a fresh one
				}
				break
			}
			sent++
			if !sess.Usable() || sent >= max(cfg.MaxDeliveriesPerConnection, 1) {
				break
			}
			m = rq.take(cfg.IdleTimeout)
		}
		sess.Close()
	}
}

// connectionFailed gives m a transient failure and, after
// consecutive_connection_failures_before_delay failures in a row, every
// message waiting in this ready queue too, as KumoMTA does.
func (rq *readyQueue) connectionFailed(m *queuedMessage, r reply, proto string) {
	rq.mu.Lock()
	rq.failures++
	var drained []*queuedMessage
	if rq.failures >= max(rq.cfg.ConsecutiveConnectionFailuresBeforeDelay, 1) {
		drained, rq.msgs = rq.msgs, nil
		rq.failures = 0
	}
	rq.mu.Unlock()
	outcome := &attemptOutcome{rq: rq, proto: proto}
	rq.srv.settle(m, outcome, uniform(r, len(m.meta.Recipients)))
	for _, d := range drained {
		rq.srv.settle(d, outcome, uniform(r, len(d.meta.Recipients)))
	}
}

func uniform(r reply, n int) []reply {
	out := make([]reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// limiterFor returns a limiter for a ThrottleSpec, reusing old when the
// rate is unchanged; nil means unlimited.
func limiterFor(old *rate.Limiter, spec string) (*rate.Limiter, error) {
	if spec == "" {
		return nil, nil
	}
	t, err := shaping.ParseThrottle(spec)
	if err != nil {
		return nil, err
	}
	limit := rate.Limit(float64(t.Limit) / t.Period.Seconds())
	if old != nil && old.Limit() == limit && old.Burst() == t.Burst() {
		return old, nil
	}
	return rate.NewLimiter(limit, t.Burst()), nil
}
