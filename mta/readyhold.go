package mta

import (
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// ReadyQueueRule is an administrative suspension of one ready queue
// (KumoMTA's suspend-ready-q): no message is sent through it until
// Expires.
type ReadyQueueRule struct {
	ID      string
	Name    string // ready queue name, source->site@protocol
	Reason  string
	Expires time.Time
}

// readyHolds is the registry of ready-queue suspensions. Its zero value
// is empty and ready for use.
type readyHolds struct {
	mu    sync.Mutex
	rules []*readyHold
}

type readyHold struct {
	ReadyQueueRule
	// hold is the rule messages point to (queuedMessage.heldBy) while the
	// suspension holds them, so cancelling releases exactly those.
	hold *QueueRule
}

// SuspendReadyQueue suspends delivery through the ready queue name (as
// ReadyQueues and log records' "site" name it) for d. Messages waiting in
// it go back to their scheduled queues, due when the suspension ends, and
// messages routed to it meanwhile wait likewise; no attempt is counted.
// Sessions in progress finish their current message.
func (s *Server) SuspendReadyQueue(name, reason string, d time.Duration) ReadyQueueRule {
	now := time.Now()
	h := &readyHold{ReadyQueueRule: ReadyQueueRule{ID: uuid.NewString(), Name: name, Reason: reason, Expires: now.Add(d)}}
	h.hold = &QueueRule{ID: h.ID, Reason: reason, Expires: h.Expires}
	s.readyHolds.mu.Lock()
	s.readyHolds.rules = append(pruneReadyHolds(s.readyHolds.rules, now), h)
	s.readyHolds.mu.Unlock()

	s.readyMu.Lock()
	rq := s.ready[name]
	s.readyMu.Unlock()
	if rq != nil {
		for _, m := range rq.drain(func(*queuedMessage) bool { return true }) {
			s.holdFor(m, h.hold)
		}
		s.reap(rq)
	}
	s.log.Info("ready queue suspended", "id", h.ID, "name", name, "reason", reason, "duration", d)
	return h.ReadyQueueRule
}

// ReadyQueueSuspensions lists the ready-queue suspensions in force.
func (s *Server) ReadyQueueSuspensions() []ReadyQueueRule {
	s.readyHolds.mu.Lock()
	defer s.readyHolds.mu.Unlock()
	s.readyHolds.rules = pruneReadyHolds(s.readyHolds.rules, time.Now())
	out := make([]ReadyQueueRule, len(s.readyHolds.rules))
	for i, h := range s.readyHolds.rules {
		out[i] = h.ReadyQueueRule
	}
	return out
}

// CancelReadyQueueSuspension lifts a ready-queue suspension by ID; the
// messages it held are due at once. It reports whether the ID was found.
func (s *Server) CancelReadyQueueSuspension(id string) bool {
	s.readyHolds.mu.Lock()
	var lifted *readyHold
	s.readyHolds.rules = slices.DeleteFunc(s.readyHolds.rules, func(h *readyHold) bool {
		if h.ID == id {
			lifted = h
			return true
		}
		return false
	})
	s.readyHolds.mu.Unlock()
	if lifted == nil {
		return false
	}
	s.sched.releaseMatching(func(m *queuedMessage) bool { return m.heldBy == lifted.hold })
	return true
}

// heldByReadyQueue holds m back, without counting an attempt, when the
// ready queue name it is being routed to is suspended. It reports
// whether it did.
func (s *Server) heldByReadyQueue(name string, m *queuedMessage) bool {
	now := time.Now()
	s.readyHolds.mu.Lock()
	var hold *QueueRule
	for _, h := range s.readyHolds.rules {
		if h.Name == name && now.Before(h.Expires) {
			hold = h.hold
			break
		}
	}
	s.readyHolds.mu.Unlock()
	if hold == nil {
		return false
	}
	s.holdFor(m, hold)
	return true
}

func pruneReadyHolds(rules []*readyHold, now time.Time) []*readyHold {
	return slices.DeleteFunc(rules, func(h *readyHold) bool { return !now.Before(h.Expires) })
}
