package mta

import (
	"time"

	"github.com/mtakit/mtakit/mta/logs"
)

// RebindRequest moves or flushes queued mail (KumoMTA's admin rebind).
type RebindRequest struct {
	// Match selects the scheduled queues whose messages are rebound.
	Match QueueMatch
	// Meta is merged into each message's metadata; setting "queue",
	// "routing_domain", "tenant" or "campaign" moves the message to the
	// scheduled queue those values name.
	Meta map[string]any
	// AlwaysFlush makes every selected message due now, also those that
	// stay in their queue. Moved messages are always due now.
	AlwaysFlush bool
	// Reason is quoted in each message's AdminRebind record.
	Reason string
	// SuppressLogging skips the AdminRebind records.
	SuppressLogging bool
}

// Rebind applies req to the messages waiting in the matching scheduled
// queues and ready queues and returns how many it changed. Changed meta
// and due times are written to the meta spool, so a flush or a move
// survives a restart. Messages in a delivery attempt are not affected.
func (s *Server) Rebind(req RebindRequest) int {
	pick := func(m *queuedMessage) bool { return req.Match.Matches(m.queue) }
	now := time.Now()
	n := 0
	for _, m := range append(s.sched.takeMatching(pick), s.drainReady(pick)...) {
		old := m.queue
		if len(req.Meta) > 0 {
			if err := m.mergeMeta(req.Meta); err != nil {
				s.log.Error("rebind: meta not applied", "id", m.id, "err", err)
			} else {
				s.sched.move(m, internQueue(packedQueueName(m.packed)))
			}
		}
		if m.queue != old || req.AlwaysFlush {
			m.setDue(now)
			m.heldBy = nil
		}
		if err := s.storeMeta(m); err != nil {
			s.log.Error("store rebound meta", "id", m.id, "err", err)
		}
		if !req.SuppressLogging {
			text := "Rebound from " + old + " to " + m.queue
			if req.Reason != "" {
				text += ": " + req.Reason
			}
			for _, rcpt := range m.recipients() {
				s.logOutcome(logs.AdminRebind, m, rcpt, reply{Code: 250, Text: text}, &attemptOutcome{}, m.numAttempts(), now)
			}
		}
		s.sched.reschedule(m)
		n++
	}
	s.log.Info("queues rebound", "match", req.Match, "messages", n, "flush", req.AlwaysFlush, "reason", req.Reason)
	return n
}

// move renames the queue of a live message, keeping the per-queue counts.
func (s *scheduler) move(m *queuedMessage, queue string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.queue == queue {
		return
	}
	if _, ok := s.live[m.id]; ok {
		if s.byQueue[m.queue]--; s.byQueue[m.queue] <= 0 {
			delete(s.byQueue, m.queue)
		}
		s.byQueue[queue]++
	}
	m.queue = queue
}
