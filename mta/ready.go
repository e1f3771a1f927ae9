package mta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

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

type tlsInfo struct {
	cipher, version string
	peerSubject     []string // tls_peer_subject_name
}

// sessionOpener opens sessions for one ready queue. A failed open returns
// the reply that each message taken for it gets.
type sessionOpener interface {
	Open(ctx context.Context, cfg shaping.PathConfig) (deliverySession, *reply)
	Protocol() string // delivery_protocol in log records
}

// readyQueue holds messages ready for delivery to one site from one
// egress source, and runs up to connection_limit delivery workers.
//
// Lifecycle: a ready queue is created by the first message dispatched to
// its (source, site) and removed by the last worker to leave it once it is
// empty, so an idle destination costs nothing. Every push happens under
// Server.readyMu with the queue looked up in Server.ready, and removal
// takes the same lock, so a message is never pushed into a removed queue.
//
// Workers: a worker counts itself out (workers--) under mu in the same
// critical section in which it finds the queue empty or the server
// stopping, so a concurrent push always sees an accurate count and starts
// a worker when none will pick its message up.
type readyQueue struct {
	srv    *Server
	name   string // source->site@proto, KumoMTA's ready queue name
	site   string
	source egress.EgressSource
	pool   string

	mu       sync.Mutex
	opener   sessionOpener
	cfg      shaping.PathConfig
	msgs     []*queuedMessage
	workers  int
	idle     int // workers waiting for a message
	waiting  int // workers waiting for a throttle (not stalled)
	notify   chan struct{}
	limits   *pathLimits
	failures int // consecutive connection failures

	// sessCtx is the context of the queue's sessions; the stall watchdog
	// cancels it (and makes a new one) when the queue makes no progress.
	sessCtx    context.Context
	sessCancel context.CancelCauseFunc
	// progress is when an attempt last finished (or the queue last became
	// busy); see Server.sweepReadyQueues.
	progress time.Time
}

// enqueueReady routes m to the ready queue name, creating the queue if
// needed and updating its opener and path config (the newest resolution
// wins: MX sets and shaping change).
func (s *Server) enqueueReady(name, site string, source egress.EgressSource, pool string, opener sessionOpener, cfg shaping.PathConfig, m *queuedMessage) {
	if s.heldByReadyQueue(name, m) { // admin suspend-ready-q, readyhold.go
		return
	}
	s.readyMu.Lock()
	rq := s.ready[name]
	if rq == nil {
		rq = &readyQueue{srv: s, name: name, site: site, source: source, pool: pool, notify: make(chan struct{}, 1)}
		rq.sessCtx, rq.sessCancel = context.WithCancelCause(s.runCtx)
		s.ready[name] = rq
	}
	rq.mu.Lock()
	rq.opener = opener
	rq.cfg = cfg
	rq.limits = s.limitsFor(rq.limits, source.Name(), site, cfg)
	rq.mu.Unlock()
	rq.push(m)
	s.readyMu.Unlock()
}

// push adds a message and starts a worker when none is free. The caller
// holds srv.readyMu (see enqueueReady).
func (rq *readyQueue) push(m *queuedMessage) {
	rq.mu.Lock()
	if len(rq.msgs) == 0 && rq.workers == rq.idle {
		rq.progress = time.Now() // the queue becomes busy: start the stall clock
	}
	rq.msgs = append(rq.msgs, m)
	start := rq.idle == 0 && rq.workers < max(rq.cfg.ConnectionLimit, 1) && !rq.srv.isStopping()
	if start {
		rq.workers++
	}
	rq.mu.Unlock()
	rq.signal()
	if start {
		rq.srv.workers.Add(1)
		go rq.work()
	}
}

func (rq *readyQueue) signal() {
	select {
	case rq.notify <- struct{}{}:
	default:
	}
}

// pushFront returns a message that was taken but not attempted, to be
// sent first. The caller is a worker of rq, so the queue is not removed.
func (rq *readyQueue) pushFront(m *queuedMessage) {
	rq.mu.Lock()
	rq.msgs = append([]*queuedMessage{m}, rq.msgs...)
	rq.mu.Unlock()
}

// take returns the next message, waiting up to idle for one. It returns
// nil when none came or the server is stopping, and then the calling
// worker has been counted out and must exit (after closing its session
// and calling srv.reap). A stopping server hands out no more messages:
// shutdown finishes the transactions in progress only.
func (rq *readyQueue) take(idle time.Duration) *queuedMessage {
	deadline := time.Now().Add(idle)
	rq.mu.Lock()
	for {
		if rq.srv.isStopping() {
			rq.workers--
			rq.mu.Unlock()
			return nil
		}
		if len(rq.msgs) > 0 {
			m := rq.msgs[0]
			rq.msgs[0] = nil
			rq.msgs = rq.msgs[1:]
			more := len(rq.msgs) > 0 && rq.idle > 0
			rq.mu.Unlock()
			if more {
				rq.signal() // one signal may have covered several pushes
			}
			return m
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			rq.workers--
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
	}
}

// leave counts out a worker that exits without take having done so, and
// starts a replacement if its exit would strand waiting messages.
func (rq *readyQueue) leave() {
	rq.mu.Lock()
	rq.workers--
	start := len(rq.msgs) > 0 && rq.idle == 0 && rq.workers < max(rq.cfg.ConnectionLimit, 1) && !rq.srv.isStopping()
	if start {
		rq.workers++
	}
	rq.mu.Unlock()
	if start {
		rq.srv.workers.Add(1)
		go rq.work()
	}
}

// reap removes rq from the server once it has no workers and no messages.
func (s *Server) reap(rq *readyQueue) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	rq.mu.Lock()
	defer rq.mu.Unlock()
	if rq.workers == 0 && len(rq.msgs) == 0 && s.ready[rq.name] == rq {
		delete(s.ready, rq.name)
		rq.sessCancel(errReadyQueueReaped)
	}
}

var (
	errReadyQueueReaped = errors.New("ready queue removed")
	errStalled          = errors.New("ready queue made no progress")
)

// work is one delivery worker: it opens a session, sends messages until
// the queue is idle, the session is spent or broken, then closes it, and
// repeats while messages wait.
func (rq *readyQueue) work() {
	defer rq.srv.workers.Done()
	defer rq.srv.reap(rq)
	for {
		m := rq.take(0)
		if m == nil {
			return
		}
		if counted := rq.session(m); counted {
			return
		}
	}
}

// session delivers m and then further messages over one session. It
// reports whether the worker has been counted out (it must then exit).
func (rq *readyQueue) session(m *queuedMessage) (counted bool) {
	srv := rq.srv
	rq.mu.Lock()
	cfg, opener, limits, ctx := rq.cfg, rq.opener, rq.limits, rq.sessCtx
	rq.mu.Unlock()
	proto := opener.Protocol()

	// Fleet-wide connection slots and the connection rate come first:
	// waiting for them is not an attempt.
	var release func()
	err := rq.throttled(func() (err error) {
		release, err = srv.acquireConns(ctx, limits.conns)
		return err
	})
	if err != nil {
		return rq.notTried(m, err, proto)
	}
	defer release()
	if err := rq.throttled(func() error { return srv.allowRates(ctx, limits.connRate) }); err != nil {
		return rq.notTried(m, err, proto)
	}
	sess, fail := opener.Open(ctx, cfg)
	if fail != nil {
		if srv.runCtx.Err() != nil {
			// Shutdown aborted the connection attempt: m was not tried.
			srv.requeueUnattempted(m)
			rq.leave()
			return true
		}
		rq.connectionFailed(m, *fail, proto)
		return false
	}
	defer sess.Close()
	rq.mu.Lock()
	rq.failures = 0
	rq.mu.Unlock()

	sent := 0
	for {
		if err := rq.throttled(func() error { return srv.allowRates(ctx, limits.msgRates) }); err != nil {
			return rq.notTried(m, err, proto)
		}
		switch srv.deliverOne(ctx, rq, sess, m, proto) {
		case aborted:
			srv.requeueUnattempted(m)
			rq.leave()
			return true
		case unusable:
			if sent == 0 {
				// A fresh session that cannot send is a connection
				// failure; counting it keeps a flapping peer from
				// making us reconnect in a tight loop.
				rq.connectionFailed(m, internalReply(451, "4.4.2", "connection became unusable before the transaction"), proto)
			} else {
				rq.pushFront(m) // the reused session went stale: retry on a fresh one
			}
			return false
		}
		rq.madeProgress()
		sent++
		if !sess.Usable() || sent >= max(cfg.MaxDeliveriesPerConnection, 1) {
			return false
		}
		if m = rq.take(cfg.IdleTimeout); m == nil {
			return true
		}
	}
}

// notTried handles a message whose worker stopped waiting for a throttle
// before sending it: at shutdown it goes back unchanged (and the worker
// exits); when the stall watchdog cancelled the queue's sessions it fails
// like a connection that could not be made.
func (rq *readyQueue) notTried(m *queuedMessage, err error, proto string) (counted bool) {
	if errors.Is(err, errStopping) || rq.srv.runCtx.Err() != nil {
		rq.srv.requeueUnattempted(m)
		rq.leave()
		return true
	}
	rq.connectionFailed(m, internalReply(451, "4.4.1", "waiting for a throttle: "+err.Error()), proto)
	return false
}

// throttled runs wait, a wait for the queue's limits, counting the worker
// as held back by its own shaping rather than stalled (see sweep).
func (rq *readyQueue) throttled(wait func() error) error {
	rq.mu.Lock()
	rq.waiting++
	rq.mu.Unlock()
	defer func() {
		rq.mu.Lock()
		rq.waiting--
		rq.progress = time.Now()
		rq.mu.Unlock()
	}()
	return wait()
}

func (rq *readyQueue) madeProgress() {
	rq.mu.Lock()
	rq.progress = time.Now()
	rq.mu.Unlock()
}

// connectionFailed gives m a transient failure and, after
// consecutive_connection_failures_before_delay failures in a row, every
// message waiting in this ready queue too, as KumoMTA does.
func (rq *readyQueue) connectionFailed(m *queuedMessage, r reply, proto string) {
	rq.mu.Lock()
	rq.failures++
	rq.progress = time.Now()
	var drained []*queuedMessage
	if rq.failures >= max(rq.cfg.ConsecutiveConnectionFailuresBeforeDelay, 1) {
		drained, rq.msgs = rq.msgs, nil
		rq.failures = 0
	}
	rq.mu.Unlock()
	outcome := &attemptOutcome{rq: rq, proto: proto}
	rq.srv.failAll(m, outcome, r)
	rq.srv.observe(rq.srv.runCtx, rq, m, []reply{r})
	for _, d := range drained {
		rq.srv.failAll(d, outcome, r)
	}
}

func uniform(r reply, n int) []reply {
	out := make([]reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// DefaultStallTimeout is the default of Options.StallTimeout.
const DefaultStallTimeout = 10 * time.Minute

// stallLoop runs the ready-queue watchdog until the server stops.
func (s *Server) stallLoop() {
	defer s.workers.Done()
	every := min(max(s.stallTimeout/4, 10*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopping:
			return
		case now := <-t.C:
			s.sweepReadyQueues(now)
		}
	}
}

// sweepReadyQueues keeps mail from waiting in a ready queue forever, the
// failure mode of KumoMTA's issue 539: a queue whose sessions make no
// progress for StallTimeout (a peer that accepted the connection and
// never answers, or answers just before every timeout) has its sessions
// cancelled, so the message in flight gets a transient failure, and its
// waiting messages are given back to the scheduled queue with a transient
// failure (backoff and max_age apply as after any failed attempt).
// Independently, a waiting message already past its queue's max_age
// expires here instead of waiting for its turn.
func (s *Server) sweepReadyQueues(now time.Time) {
	s.readyMu.Lock()
	queues := make([]*readyQueue, 0, len(s.ready))
	for _, rq := range s.ready {
		queues = append(queues, rq)
	}
	s.readyMu.Unlock()
	for _, rq := range queues {
		rq.sweep(now)
	}
}

func (rq *readyQueue) sweep(now time.Time) {
	s := rq.srv
	// Queue configs come from a user hook: look them up without the lock.
	rq.mu.Lock()
	names := make(map[string]time.Duration)
	for _, m := range rq.msgs {
		names[m.queue] = 0
	}
	rq.mu.Unlock()
	for q := range names {
		names[q] = s.queueConfig(q).MaxAge
	}

	rq.mu.Lock()
	busy := rq.workers-rq.idle > 0 || len(rq.msgs) > 0
	// A queue held back by its own limits is not stalled.
	stalled := busy && rq.waiting == 0 && now.Sub(rq.progress) > s.stallTimeout
	var back []*queuedMessage
	if stalled {
		rq.sessCancel(fmt.Errorf("%w for %s", errStalled, s.stallTimeout))
		rq.sessCtx, rq.sessCancel = context.WithCancelCause(s.runCtx)
		rq.progress = now
		back = rq.drainLocked(func(*queuedMessage) bool { return true })
	} else {
		back = rq.drainLocked(func(m *queuedMessage) bool {
			maxAge, ok := names[m.queue]
			return ok && now.Sub(m.id.Time()) > maxAge
		})
	}
	rq.mu.Unlock()
	if len(back) == 0 {
		return
	}
	if stalled {
		s.log.Warn("ready queue made no progress; returning its messages to the scheduled queue", "ready_queue", rq.name, "messages", len(back), "stall_timeout", s.stallTimeout)
		r := internalReply(451, "4.4.1", fmt.Sprintf("ready queue %s made no progress for %s; message returned to the scheduled queue", rq.name, s.stallTimeout))
		outcome := &attemptOutcome{rq: rq}
		for _, m := range back {
			s.failAll(m, outcome, r)
		}
	} else {
		for _, m := range back {
			s.expireIfTooOld(m, s.queueConfig(m.queue), now)
		}
	}
	s.reap(rq)
}

// ReadyQueueInfo describes one ready queue: the messages for one
// destination site from one egress source that are due now.
type ReadyQueueInfo struct {
	Name        string // KumoMTA's ready queue name, source->site@protocol
	Site        string
	Source      string
	Pool        string
	Queued      int // messages waiting for a connection
	Connections int // delivery workers (open or opening sessions)
	// PathConfig is the egress path configuration in force for the
	// queue (from the Shaper at the last routing decision).
	PathConfig shaping.PathConfig
}

// ReadyQueues lists the ready queues that exist now. A ready queue exists
// while it has messages or workers; an idle one is removed.
func (s *Server) ReadyQueues() []ReadyQueueInfo {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	out := make([]ReadyQueueInfo, 0, len(s.ready))
	for _, rq := range s.ready {
		rq.mu.Lock()
		out = append(out, ReadyQueueInfo{Name: rq.name, Site: rq.site, Source: rq.source.Name(), Pool: rq.pool, Queued: len(rq.msgs), Connections: rq.workers, PathConfig: rq.cfg})
		rq.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b ReadyQueueInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}
