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
			s.BounceQueues(QueueMatch{Domain: domain}, a.Reason, a.Duration)
		case shaping.ActionBounceTenant:
			if tenant != "" {
				s.BounceQueues(QueueMatch{Tenant: tenant, Domain: domain}, a.Reason, a.Duration)
			}
		case shaping.ActionBounceCampaign:
			if campaign != "" && tenant != "" {
				s.BounceQueues(QueueMatch{Campaign: campaign, Tenant: tenant, Domain: domain}, a.Reason, a.Duration)
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
		s.settle(w, outcome, uniform(r, len(w.meta.Recipients)))
	}
}

// suspendOnce suspends matching queues for the action's duration, or
// extends a suspension with the same criteria already in force, so that a
// burst of matching responses makes one rule, not hundreds.
func (s *Server) suspendOnce(match QueueMatch, a shaping.Action) {
	until := time.Now().Add(a.Duration)
	s.rules.mu.Lock()
	for _, r := range s.rules.suspend {
		if sameMatch(r.Match, match) && time.Now().Before(r.Expires) {
			if until.After(r.Expires) {
				r.Expires = until
			}
			s.rules.mu.Unlock()
			return
		}
	}
	s.rules.mu.Unlock()
	s.SuspendQueues(match, a.Reason, a.Duration)
}

func sameMatch(a, b QueueMatch) bool {
	return a.Campaign == b.Campaign && a.Tenant == b.Tenant && a.Domain == b.Domain &&
		a.RoutingDomain == b.RoutingDomain && slices.Equal(a.Queues, b.Queues)
}
