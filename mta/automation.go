package mta

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

// observe shows the distinct replies of one attempt on rq to the shaper
// (KumoMTA's traffic shaping automation sees every response) and applies
// the actions they trigger.
func (s *Server) observe(ctx context.Context, rq *readyQueue, m *queuedMessage, replies []reply) {
	if rq == nil || len(replies) == 0 {
		return
	}
	_, _, domain, _ := ParseQueueName(m.queue)
	var seen []reply
	for _, r := range replies {
		if slices.ContainsFunc(seen, func(o reply) bool { return o.Code == r.Code && o.Text == r.Text }) {
			continue
		}
		seen = append(seen, r)
		resp := shaping.Response{Code: r.Code, Text: r.Text}
		if r.Enhanced != ([3]int{}) {
			resp.Enhanced = fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
		}
		if acts := s.shaper.Observe(ctx, rq.source.Name(), rq.site, domain, resp); len(acts) > 0 {
			s.applyActions(ctx, rq, m, domain, acts)
		}
	}
}

// applyActions carries out automation actions. Suspend and SetConfig are
// in force in the shaper's PathConfig already: the ready queue re-reads it,
// and a suspended one gives its waiting messages back to the scheduled
// queue. The tenant and campaign actions become scheduled-queue
// suspensions and bounce rules (see SuspendQueues and BounceQueues) for
// the queue parts of the message whose response triggered them, as
// KumoMTA's tsa-daemon does; they are skipped when the queue has no
// tenant (or campaign).
func (s *Server) applyActions(ctx context.Context, rq *readyQueue, m *queuedMessage, domain string, acts []shaping.Action) {
	campaign, tenant, _, _ := ParseQueueName(m.queue)
	refresh := false
	for _, a := range acts {
		switch a.Kind {
		case shaping.ActionSuspend, shaping.ActionSetConfig, shaping.ActionSetDomainConfig:
			refresh = true
		case shaping.ActionSuspendTenant:
			if tenant != "" {
				s.suspendOnce(QueueMatch{Tenant: tenant, Domain: domain}, a)
			}
		case shaping.ActionSuspendCampaign:
			if campaign != "" && tenant != "" {
				s.suspendOnce(QueueMatch{Campaign: campaign, Tenant: tenant, Domain: domain}, a)
			}
		case shaping.ActionBounce:
			s.bounceOnce(QueueMatch{Domain: domain}, a)
		case shaping.ActionBounceTenant:
			if tenant != "" {
				s.bounceOnce(QueueMatch{Tenant: tenant, Domain: domain}, a)
			}
		case shaping.ActionBounceCampaign:
			if campaign != "" && tenant != "" {
				s.bounceOnce(QueueMatch{Campaign: campaign, Tenant: tenant, Domain: domain}, a)
			}
		default:
			s.log.Warn("unknown automation action ignored", "kind", a.Kind, "reason", a.Reason)
		}
	}
	if !refresh {
		return
	}
	pc := s.pathConfig(ctx, rq.source.Name(), rq.site, domain)
	rq.mu.Lock()
	rq.cfg = pc
	rq.limits = s.limitsFor(rq.limits, rq.source.Name(), rq.site, pc)
	rq.mu.Unlock()
	if !pc.Suspended {
		return
	}
	waiting := rq.drain(func(*queuedMessage) bool { return true })
	r := internalReply(451, "4.4.5", "ready queue "+rq.name+" suspended by the shaper")
	outcome := &attemptOutcome{rq: rq}
	for _, w := range waiting {
		s.failAll(w, outcome, r)
	}
}

// suspendOnce suspends matching queues for the action's duration, or
// extends a suspension with the same criteria already in force, so that a
// burst of matching responses makes one rule, not hundreds.
func (s *Server) suspendOnce(match QueueMatch, a shaping.Action) {
	if !s.extendRule(&s.rules.suspend, match, a.Duration) {
		s.SuspendQueues(match, a.Reason, a.Duration)
	}
}

// bounceOnce is suspendOnce for bounce rules: the queued messages were
// bounced when the rule was made, and later ones meet it at dispatch.
func (s *Server) bounceOnce(match QueueMatch, a shaping.Action) {
	if !s.extendRule(&s.rules.bounce, match, a.Duration) {
		s.BounceQueues(match, a.Reason, a.Duration)
	}
}

// extendRule extends a rule of list with the same criteria that is in
// force to at least d from now, and reports whether there was one.
func (s *Server) extendRule(list *[]*QueueRule, match QueueMatch, d time.Duration) bool {
	now := time.Now()
	until := now.Add(d)
	s.rules.mu.Lock()
	defer s.rules.mu.Unlock()
	for _, r := range *list {
		if sameMatch(r.Match, match) && now.Before(r.Expires) {
			if until.After(r.Expires) {
				r.Expires = until
			}
			return true
		}
	}
	return false
}

func sameMatch(a, b QueueMatch) bool {
	return a.Campaign == b.Campaign && a.Tenant == b.Tenant && a.Domain == b.Domain &&
		a.RoutingDomain == b.RoutingDomain && slices.Equal(a.Queues, b.Queues)
}
