package mta

import (
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mtakit/mtakit/mta/logs"
)

// QueueMatch selects scheduled queues by the parts of their names, as the
// criteria of KumoMTA's admin bounce and suspend APIs do. Empty fields
// match anything; a zero QueueMatch matches every queue.
type QueueMatch struct {
	Campaign      string
	Tenant        string
	Domain        string
	RoutingDomain string
	// Queues, when not empty, lists exact queue names and overrides the
	// other fields.
	Queues []string
}

// Matches reports whether the scheduled queue named queue is selected.
func (q QueueMatch) Matches(queue string) bool {
	if len(q.Queues) > 0 {
		return slices.Contains(q.Queues, queue)
	}
	campaign, tenant, domain, routing := ParseQueueName(queue)
	return (q.Campaign == "" || q.Campaign == campaign) &&
		(q.Tenant == "" || q.Tenant == tenant) &&
		(q.Domain == "" || q.Domain == domain) &&
		(q.RoutingDomain == "" || q.RoutingDomain == routing)
}

// QueueRule is an administrative rule over scheduled queues: a suspension
// or a bounce, in force until Expires.
type QueueRule struct {
	ID      string
	Match   QueueMatch
	Reason  string
	Expires time.Time
	// Bounced counts the messages a bounce rule has bounced so far.
	Bounced int
}

// queueRules holds the suspensions and bounces in force.
type queueRules struct {
	mu      sync.Mutex
	suspend []*QueueRule
	bounce  []*QueueRule
}

// find returns the first rule in force that matches queue.
func findRule(rules []*QueueRule, queue string, now time.Time) *QueueRule {
	for _, r := range rules {
		if now.Before(r.Expires) && r.Match.Matches(queue) {
			return r
		}
	}
	return nil
}

func pruneRules(rules []*QueueRule, now time.Time) []*QueueRule {
	return slices.DeleteFunc(rules, func(r *QueueRule) bool { return !now.Before(r.Expires) })
}

func listRules(rules []*QueueRule) []QueueRule {
	out := make([]QueueRule, len(rules))
	for i, r := range rules {
		out[i] = *r
	}
	return out
}

// SuspendQueues holds delivery for the matching scheduled queues for d
// (KumoMTA's admin suspend): their messages are not attempted and not
// charged an attempt; when they come due they wait until the suspension
// ends. Messages already in ready queues go back to their scheduled
// queues; attempts in progress finish. It returns the rule.
func (s *Server) SuspendQueues(match QueueMatch, reason string, d time.Duration) QueueRule {
	r := &QueueRule{ID: uuid.NewString(), Match: match, Reason: reason, Expires: time.Now().Add(d)}
	s.rules.mu.Lock()
	s.rules.suspend = append(pruneRules(s.rules.suspend, time.Now()), r)
	s.rules.mu.Unlock()
	for _, m := range s.drainReady(func(m *queuedMessage) bool { return match.Matches(m.queue) }) {
		s.holdFor(m, r)
	}
	s.log.Info("scheduled queues suspended", "id", r.ID, "match", match, "reason", reason, "duration", d)
	return *r
}

// BounceQueues bounces every message of the matching scheduled queues now
// and, for d, every message that enters them (KumoMTA's admin bounce).
// Each message gets an AdminBounce record per recipient and leaves the
// spool; attempts in progress finish first. It returns the rule; see
// QueueRules for its running count.
func (s *Server) BounceQueues(match QueueMatch, reason string, d time.Duration) QueueRule {
	r := &QueueRule{ID: uuid.NewString(), Match: match, Reason: reason, Expires: time.Now().Add(d)}
	s.rules.mu.Lock()
	s.rules.bounce = append(pruneRules(s.rules.bounce, time.Now()), r)
	s.rules.mu.Unlock()
	pick := func(m *queuedMessage) bool { return match.Matches(m.queue) }
	for _, m := range append(s.sched.takeMatching(pick), s.drainReady(pick)...) {
		s.adminBounce(m, r)
	}
	s.log.Info("scheduled queues bounced", "id", r.ID, "match", match, "reason", reason, "duration", d)
	s.rules.mu.Lock()
	out := *r
	s.rules.mu.Unlock()
	return out
}

// QueueRules lists the suspensions and bounce rules in force.
func (s *Server) QueueRules() (suspensions, bounces []QueueRule) {
	s.rules.mu.Lock()
	defer s.rules.mu.Unlock()
	now := time.Now()
	s.rules.suspend = pruneRules(s.rules.suspend, now)
	s.rules.bounce = pruneRules(s.rules.bounce, now)
	return listRules(s.rules.suspend), listRules(s.rules.bounce)
}

// CancelQueueRule lifts a suspension or bounce rule by ID before it
// expires. Messages held by a lifted suspension are released at once.
func (s *Server) CancelQueueRule(id string) bool {
	s.rules.mu.Lock()
	var lifted *QueueRule
	for _, list := range []*[]*QueueRule{&s.rules.suspend, &s.rules.bounce} {
		*list = slices.DeleteFunc(*list, func(r *QueueRule) bool {
			if r.ID == id {
				lifted = r
				return true
			}
			return false
		})
	}
	s.rules.mu.Unlock()
	if lifted == nil {
		return false
	}
	s.sched.releaseMatching(func(m *queuedMessage) bool { return m.heldBy == lifted })
	return true
}

// checkRules applies the rules in force to a message about to be
// dispatched. It reports whether the message was handled (bounced or
// held back).
func (s *Server) checkRules(m *queuedMessage, now time.Time) bool {
	s.rules.mu.Lock()
	b := findRule(s.rules.bounce, m.queue, now)
	sus := findRule(s.rules.suspend, m.queue, now)
	s.rules.mu.Unlock()
	switch {
	case b != nil:
		s.adminBounce(m, b)
	case sus != nil:
		s.holdFor(m, sus)
	default:
		return false
	}
	return true
}

// holdFor reschedules m for the end of suspension r without counting an
// attempt. Only the in-memory due time changes: after a restart the
// message is due as spooled and meets the rules in force then.
func (s *Server) holdFor(m *queuedMessage, r *QueueRule) {
	m.setDue(r.Expires)
	m.heldBy = r
	s.sched.reschedule(m)
}

func (s *Server) adminBounce(m *queuedMessage, r *QueueRule) {
	resp := reply{Code: 551, Enhanced: [3]int{5, 7, 1}, Text: "Administrator bounced with reason: " + r.Reason}
	now := time.Now()
	for _, rcpt := range m.recipients() {
		s.logOutcome(logs.AdminBounce, m, rcpt, resp, &attemptOutcome{}, m.numAttempts(), now)
	}
	s.rules.mu.Lock()
	r.Bounced++
	s.rules.mu.Unlock()
	s.retire(m)
}

// drainReady removes the messages that pick selects from every ready
// queue and returns them; they are owned by the caller.
func (s *Server) drainReady(pick func(*queuedMessage) bool) []*queuedMessage {
	s.readyMu.Lock()
	queues := make([]*readyQueue, 0, len(s.ready))
	for _, rq := range s.ready {
		queues = append(queues, rq)
	}
	s.readyMu.Unlock()
	var out []*queuedMessage
	for _, rq := range queues {
		out = append(out, rq.drain(pick)...)
		s.reap(rq) // an emptied queue without workers goes away
	}
	return out
}

// drain removes the waiting messages that pick selects.
func (rq *readyQueue) drain(pick func(*queuedMessage) bool) []*queuedMessage {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	return rq.drainLocked(pick)
}

// drainLocked is drain with rq.mu held.
func (rq *readyQueue) drainLocked(pick func(*queuedMessage) bool) []*queuedMessage {
	var out []*queuedMessage
	keep := rq.msgs[:0]
	for _, m := range rq.msgs {
		if pick(m) {
			out = append(out, m)
		} else {
			keep = append(keep, m)
		}
	}
	clear(rq.msgs[len(keep):])
	rq.msgs = keep
	return out
}
