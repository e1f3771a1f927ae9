package mta

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
)

// dispatchers is the number of goroutines that move due messages from the
// scheduler to ready queues; they mostly wait on DNS.
const dispatchers = 8

// dispatchLoop routes due messages until the server stops.
func (s *Server) dispatchLoop(due <-chan *queuedMessage) {
	defer s.workers.Done()
	for {
		select {
		case m := <-due:
			s.dispatch(s.runCtx, m)
		case <-s.stopping:
			return
		}
	}
}

// dispatch finds the ready queue for a due message: queue config, egress
// source, destination site. Routing failures settle the message at once.
func (s *Server) dispatch(ctx context.Context, m *queuedMessage) {
	now := time.Now()
	m.heldBy = nil
	cfg := s.queueConfig(m.queue)
	if s.expireIfTooOld(m, cfg, now) || s.checkRules(m, now) {
		return
	}
	if s.queueRateExceeded(ctx, m, cfg, now) {
		return
	}
	poolName := cfg.EgressPool
	if poolName == "" {
		poolName = "unspecified"
	}
	pool := s.pool(poolName)
	if pool == nil {
		s.failAll(m, &attemptOutcome{}, internalReply(451, "4.4.4", "egress pool "+poolName+" is not defined"))
		return
	}
	// Each scheduled queue spreads its mail over the pool by weight on
	// its own, when the pool can (egress.WeightedPool can).
	var source egress.EgressSource
	if kp, ok := pool.(egress.KeyedPool); ok {
		source = kp.NextFor(m.queue)
	} else {
		source = pool.Next()
	}
	if source == nil {
		s.failAll(m, &attemptOutcome{}, internalReply(451, "4.4.4", "egress pool "+poolName+" has no sources"))
		return
	}

	_, _, domain, routing := ParseQueueName(m.queue)
	if r := m.metaString(MetaRoutingDomain); r != "" {
		routing = r
	}
	if routing == "" {
		routing = domain
	}

	if deliver := cfg.Protocol.Deliver; deliver != nil {
		name := egress.ReadyQueueName(source.Name(), routing, "go")
		s.enqueueReady(name, routing, source, poolName, funcOpener{deliver}, s.pathConfig(ctx, source.Name(), routing, routing), m)
		return
	}

	plan, err := s.resolve(ctx, routing, cfg.Protocol.MXList)
	if err != nil {
		r := dnsReply(routing, err)
		s.failAll(m, &attemptOutcome{proto: "ESMTP"}, r)
		return
	}
	pc := s.pathConfig(ctx, source.Name(), plan.SiteName, routing)
	if pc.Suspended {
		s.failAll(m, &attemptOutcome{}, internalReply(451, "4.4.5", "ready queue for "+plan.SiteName+" is suspended by the shaper"))
		return
	}
	name := egress.ReadyQueueName(source.Name(), plan.SiteName, "smtp_client")
	s.enqueueReady(name, plan.SiteName, source, poolName, s.smtpOpener(source, plan, len(cfg.Protocol.MXList) == 0), pc, m)
}

// queueRateExceeded holds m back when its scheduled queue's
// max_message_rate is used up: it is due again when the throttle says,
// with no attempt counted.
func (s *Server) queueRateExceeded(ctx context.Context, m *queuedMessage, cfg QueueConfig, now time.Time) bool {
	if cfg.MaxMessageRate == "" {
		return false
	}
	spec, err := s.throttleSpec(cfg.MaxMessageRate)
	if err != nil {
		s.log.Warn("invalid queue max_message_rate; not enforced", "queue", m.queue, "spec", cfg.MaxMessageRate, "err", err)
		return false
	}
	wait := s.throttleFor(spec.Local).Allow(ctx, shaping.NamedKey("queue-rate", m.queue), spec, 1)
	if wait <= 0 {
		return false
	}
	m.setDue(now.Add(wait))
	s.sched.reschedule(m)
	return true
}

// throttleSpec parses a queue's max_message_rate once per distinct spec,
// not once per dispatched message.
func (s *Server) throttleSpec(text string) (shaping.ThrottleSpec, error) {
	if v, ok := s.queueRates.Load(text); ok {
		return v.(shaping.ThrottleSpec), nil
	}
	spec, err := shaping.ParseThrottle(text)
	if err == nil {
		s.queueRates.Store(text, spec)
	}
	return spec, err
}

// resolve returns the delivery plan for a routing domain: its MX hosts, or
// the explicit host list of the queue's protocol.
func (s *Server) resolve(ctx context.Context, domain string, mxList []string) (*egress.MXPlan, error) {
	if len(mxList) == 0 {
		return s.resolver.ResolveMX(ctx, domain)
	}
	plan := &egress.MXPlan{Domain: domain, SiteName: egress.MXListSiteName(mxList)}
	var errs []error
	for _, entry := range mxList {
		host, port, _ := egress.CutPort(entry)
		if port != 0 {
			plan.Port = port // one port for the plan: the list names one service
		}
		addrs, err := s.resolver.ResolveHost(ctx, host)
		if err != nil {
			errs = append(errs, err)
		}
		plan.Hosts = append(plan.Hosts, egress.MXHost{Name: strings.Trim(host, "[]"), Addrs: addrs, Err: err})
	}
	if len(errs) == len(mxList) {
		// A fixed list that resolves nowhere is a routing problem to
		// retry, never a reason to bounce.
		return nil, &egress.DNSError{Name: strings.Join(mxList, ","), Rcode: -1, Temporary: true, Err: errors.Join(errs...)}
	}
	return plan, nil
}

// dnsReply turns a resolution failure into the reply the message gets:
// permanent for a domain that cannot receive mail, transient otherwise.
func dnsReply(domain string, err error) reply {
	switch {
	case errors.Is(err, egress.ErrNullMX):
		return internalReply(556, "5.1.10", "Recipient address has null MX: "+domain)
	case egress.IsPermanent(err):
		return internalReply(550, "5.1.2", "failed to resolve "+domain+": "+err.Error())
	default:
		return internalReply(451, "4.4.4", "failed to resolve "+domain+": "+err.Error())
	}
}

func (s *Server) queueConfig(queue string) QueueConfig {
	var cfg QueueConfig
	if hook := s.opts.Policy.QueueConfig; hook != nil {
		campaign, tenant, domain, routing := ParseQueueName(queue)
		c, err := hook(queue, campaign, tenant, domain, routing)
		if err != nil {
			s.log.Error("queue config hook failed; using defaults", "queue", queue, "err", err)
		} else {
			cfg = c
		}
	}
	return cfg.withDefaults()
}

func (s *Server) pathConfig(ctx context.Context, source, site, domain string) shaping.PathConfig {
	pc, err := s.shaper.PathConfig(ctx, source, site, domain)
	if err != nil {
		s.log.Error("shaper failed; using default path config", "site", site, "err", err)
		return shaping.Default()
	}
	return pc
}

func (s *Server) pool(name string) egress.Pool {
	if p, ok := (*s.pools.Load())[name]; ok {
		return p
	}
	if name == "unspecified" {
		return s.defaultPool
	}
	return nil
}

// funcOpener delivers through a Go function (QueueConfig.Protocol.Deliver).
type funcOpener struct{ fn DeliverFunc }

func (f funcOpener) Protocol() string { return "Go" }

func (f funcOpener) Open(context.Context, shaping.PathConfig) (deliverySession, *reply) {
	return funcSession{f.fn}, nil
}

type funcSession struct{ fn DeliverFunc }

func (f funcSession) Send(ctx context.Context, env *envelope) []reply {
	err := f.fn(ctx, &Delivery{ID: env.id, Sender: env.sender, Recipients: env.recipients, Data: env.data, Queue: env.queue, Attempt: env.attempt})
	r := reply{Code: 250, Enhanced: [3]int{2, 0, 0}, Text: "delivered"}
	if err != nil {
		r = errorReply(err)
	}
	return uniform(r, len(env.recipients))
}

func (funcSession) Usable() bool { return true }
func (funcSession) Close()       {}
func (funcSession) Peer() (*logs.PeerAddress, *logs.SourceAddress, tlsInfo) {
	return nil, nil, tlsInfo{}
}
