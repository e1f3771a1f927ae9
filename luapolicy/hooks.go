package luapolicy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/shaping"
)

// MTAPolicy returns the mta.Policy hooks of the policy: MessageReceived
// runs smtp_server_message_received (or http_message_generated for
// messages whose reception_protocol is "HTTP"); QueueConfig runs
// get_queue_config. A hook is nil when the policy has no handler for it.
func (p *Policy) MTAPolicy() mta.Policy {
	var pol mta.Policy
	if p.HasHandler("smtp_server_message_received") || p.HasHandler("http_message_generated") {
		pol.MessageReceived = p.MessageReceived
	}
	if p.HasHandler("get_queue_config") {
		pol.QueueConfig = p.QueueConfig
	}
	return pol
}

// MessageReceived calls smtp_server_message_received(msg, conn_meta), or
// http_message_generated(msg, auth_info) for injected messages. A
// kumo.reject becomes the SMTP reply (mta.Reject).
func (p *Policy) MessageReceived(ctx context.Context, msg *mta.Message) error {
	event := "smtp_server_message_received"
	if msg.MetaString(mta.MetaReceptionProtocol) == "HTTP" {
		event = "http_message_generated"
	}
	if !p.HasHandler(event) {
		return nil
	}
	return p.withState(ctx, func(s *state) error {
		ud := s.pushMessage(msg)
		_, err := s.fire(event, ud, s.connMeta(msg))
		var rej *rejectError
		if errors.As(err, &rej) {
			return mta.Reject(rej.code, rej.text)
		}
		return err
	})
}

// metaStore is what a conn_meta object reads and writes: a session's
// connection meta (*listener.SessionInfo) in the SMTP session events, or
// the message's meta (*mta.Message, which starts as a copy of the
// connection's) in smtp_server_message_received.
type metaStore interface {
	Meta(key string) any
	SetMeta(key string, v any)
}

// connMeta returns the connection metadata object passed to reception
// events: get_meta and set_meta on the message's meta, which holds the
// connection's (received_from, ehlo_domain, ...).
func (s *state) connMeta(msg *mta.Message) lua.LValue {
	if msg == nil {
		return s.sessionConnMeta(nil)
	}
	return s.sessionConnMeta(msg)
}

// sessionConnMeta returns a conn_meta object over m; nil m is an empty,
// read-only conn_meta.
func (s *state) sessionConnMeta(m metaStore) lua.LValue {
	ud := s.L.NewUserData()
	ud.Value = &connMetaValue{m: m}
	s.L.SetMetatable(ud, s.connMetaMT)
	return ud
}

type connMetaValue struct{ m metaStore }

func checkConnMeta(L *lua.LState) metaStore {
	ud := L.CheckUserData(1)
	cm, ok := ud.Value.(*connMetaValue)
	if !ok {
		L.ArgError(1, "conn_meta expected (call methods with ':', as conn_meta:get_meta(...))")
	}
	return cm.m
}

func (s *state) connMetaMetatable() *lua.LTable {
	L := s.L
	idx := L.NewTable()
	L.SetFuncs(idx, map[string]lua.LGFunction{
		"get_meta": func(L *lua.LState) int {
			m := checkConnMeta(L)
			key := L.CheckString(2)
			if m == nil {
				L.Push(lua.LNil)
				return 1
			}
			L.Push(toLua(L, m.Meta(key)))
			return 1
		},
		"set_meta": func(L *lua.LState) int {
			m := checkConnMeta(L)
			key := L.CheckString(2)
			v, err := toGo(L.Get(3))
			if err != nil {
				L.ArgError(3, err.Error())
			}
			if m == nil {
				L.RaiseError("conn_meta:set_meta: no session in this event")
			}
			m.SetMeta(key, v)
			return 0
		},
	})
	s.strict(idx, "conn_meta")
	mt := L.NewTable()
	mt.RawSetString("__index", idx)
	return mt
}

func optString(v string) lua.LValue {
	if v == "" {
		return lua.LNil
	}
	return lua.LString(v)
}

// QueueConfig calls get_queue_config(domain, tenant, campaign,
// routing_domain), memoized per argument tuple for the returned config's
// refresh_interval (default 1 minute). No handler returning a value means
// the defaults.
func (p *Policy) QueueConfig(queue, campaign, tenant, domain, routingDomain string) (mta.QueueConfig, error) {
	if q := p.directQueues; q != nil {
		return q.QueueConfig(queue, campaign, tenant, domain, routingDomain)
	}
	key := strings.Join([]string{domain, tenant, campaign, routingDomain}, "\x00")
	now := nowFunc()
	if v, ok := p.queueMemo.get(key, now); ok {
		return v.cfg, nil
	}
	var q *queueConfigValue
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout())
	defer cancel()
	err := p.withState(ctx, func(s *state) error {
		v, err := s.fire("get_queue_config", lua.LString(domain), optString(tenant), optString(campaign), optString(routingDomain))
		if err != nil {
			return err
		}
		q, err = valueAs[*queueConfigValue](v, "get_queue_config", "kumo.make_queue_config")
		return err
	})
	if err != nil {
		return mta.QueueConfig{}, fmt.Errorf("luapolicy: queue %s: %w", queue, err)
	}
	if q == nil {
		q = &queueConfigValue{refresh: defaultTTL}
	}
	p.queueMemo.put(key, q, q.refresh, now)
	return q.cfg, nil
}

// valueAs returns the Go value of a handler result made by maker, or nil
// for nil.
func valueAs[T any](v lua.LValue, event, maker string) (T, error) {
	var zero T
	if v == lua.LNil {
		return zero, nil
	}
	if ud, ok := v.(*lua.LUserData); ok {
		if t, ok := ud.Value.(T); ok {
			return t, nil
		}
	}
	return zero, fmt.Errorf("%s must return the result of %s or nil, not a %s", event, maker, v.Type())
}

// DomainLookup returns the listener.DomainLookup backed by the
// get_listener_domain event, or nil when the policy has no handler. In a
// listener's session the handler receives the session's conn_meta
// (listener.ContextSession) and its result is cached by the listener for
// that session only, as in KumoMTA; outside a session (no session in the
// context) it receives an empty conn_meta and results are memoized per
// (domain, listener) for one minute.
func (p *Policy) DomainLookup() listener.DomainLookup {
	if !p.HasHandler("get_listener_domain") {
		return nil
	}
	return listener.DomainLookupFunc(p.LookupListenerDomain)
}

// LookupListenerDomain calls get_listener_domain(domain, listener,
// conn_meta).
func (p *Policy) LookupListenerDomain(ctx context.Context, domain, listenerAddr string) (*listener.ListenerDomain, error) {
	if t := p.directDomains; t != nil {
		return t.lookup(listenerAddr, strings.ToLower(domain)), nil
	}
	sess := listener.ContextSession(ctx)
	key := domain + "\x00" + listenerAddr
	now := nowFunc()
	if sess == nil {
		if v, ok := p.domainMemo.get(key, now); ok {
			return v, nil
		}
	}
	var d *listener.ListenerDomain
	err := p.withState(ctx, func(s *state) error {
		cm := s.emptyConnMeta
		if sess != nil {
			cm = s.sessionConnMeta(sess)
		}
		v, err := s.fire("get_listener_domain", lua.LString(domain), lua.LString(listenerAddr), cm)
		if err != nil {
			return err
		}
		d, err = valueAs[*listener.ListenerDomain](v, "get_listener_domain", "kumo.make_listener_domain")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("luapolicy: listener domain %s: %w", domain, err)
	}
	if sess == nil {
		p.domainMemo.put(key, d, defaultTTL, now)
	}
	return d, nil
}

// Shaper returns the shaping.Shaper backed by get_egress_path_config, or
// nil when the policy has no handler. Observe returns the automation
// actions of policy-extras.shaping when that helper provides the handler,
// and none otherwise.
func (p *Policy) Shaper() shaping.Shaper {
	if !p.HasHandler("get_egress_path_config") {
		return nil
	}
	if p.directShaper != nil {
		return p.directShaper
	}
	return policyShaper{p}
}

type policyShaper struct{ p *Policy }

func (ps policyShaper) PathConfig(ctx context.Context, source, site, domain string) (shaping.PathConfig, error) {
	return ps.p.PathConfig(ctx, source, site, domain)
}

func (ps policyShaper) Observe(ctx context.Context, source, site, domain string, resp shaping.Response) []shaping.Action {
	p := ps.p
	p.mu.Lock()
	x := p.extraShaper
	p.mu.Unlock()
	if x == nil {
		return nil
	}
	return x.Observe(ctx, source, site, domain, resp)
}

// shapingEngine returns the configuration loaded by policy-extras.shaping,
// or nil.
func (p *Policy) shapingEngine() *shaping.Shaping {
	p.mu.Lock()
	defer p.mu.Unlock()
	sh, _ := p.extraShaper.(*shaping.Shaping)
	return sh
}

// extraShaper is the Go shaper of policy-extras.shaping, whose Observe
// carries the automation rules.
type extraShaper interface {
	Observe(ctx context.Context, source, site, domain string, resp shaping.Response) []shaping.Action
}

// PathConfig calls get_egress_path_config(domain, egress_source,
// site_name), memoized per argument tuple for the result's
// refresh_interval (default 60 s).
func (p *Policy) PathConfig(ctx context.Context, source, site, domain string) (shaping.PathConfig, error) {
	key := domain + "\x00" + source + "\x00" + site
	now := nowFunc()
	if v, ok := p.pathMemo.get(key, now); ok {
		return v.cfg, nil
	}
	var pv *pathValue
	err := p.withState(ctx, func(s *state) error {
		v, err := s.fire("get_egress_path_config", lua.LString(domain), lua.LString(source), lua.LString(site))
		if err != nil {
			return err
		}
		pv, err = valueAs[*pathValue](v, "get_egress_path_config", "kumo.make_egress_path")
		return err
	})
	if err != nil {
		return shaping.Default(), fmt.Errorf("luapolicy: egress path %s->%s: %w", source, site, err)
	}
	if pv == nil {
		pv = &pathValue{cfg: shaping.Default(), refresh: defaultTTL}
	}
	p.pathMemo.put(key, pv, pv.refresh, now)
	return pv.cfg, nil
}

// EgressSource calls get_egress_source(name), memoized for the source's
// ttl (default 60 s).
func (p *Policy) EgressSource(ctx context.Context, name string) (*egress.Source, error) {
	now := nowFunc()
	if v, ok := p.sourceMemo.get(name, now); ok {
		return v.src, nil
	}
	var sv *sourceValue
	err := p.withState(ctx, func(s *state) error {
		v, err := s.fire("get_egress_source", lua.LString(name))
		if err != nil {
			return err
		}
		sv, err = valueAs[*sourceValue](v, "get_egress_source", "kumo.make_egress_source")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("luapolicy: egress source %s: %w", name, err)
	}
	if sv == nil {
		return nil, fmt.Errorf("luapolicy: egress source %s: get_egress_source returned nil", name)
	}
	p.sourceMemo.put(name, sv, sv.ttl, now)
	return sv.src, nil
}

// EgressPool calls get_egress_pool(name) and resolves its sources,
// memoized for the pool's ttl (default 60 s).
func (p *Policy) EgressPool(ctx context.Context, name string) (*egress.WeightedPool, error) {
	wp, _, err := p.egressPool(ctx, name)
	return wp, err
}

// egressPool also returns a signature of the pool's definition, so a
// lazyPool can keep its round-robin state while nothing changes.
func (p *Policy) egressPool(ctx context.Context, name string) (*egress.WeightedPool, string, error) {
	now := nowFunc()
	pv, ok := p.poolMemo.get(name, now)
	if !ok {
		err := p.withState(ctx, func(s *state) error {
			v, err := s.fire("get_egress_pool", lua.LString(name))
			if err != nil {
				return err
			}
			pv, err = valueAs[*poolValue](v, "get_egress_pool", "kumo.make_egress_pool")
			return err
		})
		if err != nil {
			return nil, "", fmt.Errorf("luapolicy: egress pool %s: %w", name, err)
		}
		if pv == nil {
			return nil, "", fmt.Errorf("luapolicy: egress pool %s: get_egress_pool returned nil", name)
		}
		p.poolMemo.put(name, pv, pv.ttl, now)
	}
	entries := make([]egress.WeightedSource, 0, len(pv.entries))
	var sig strings.Builder
	sig.WriteString(pv.name)
	for _, e := range pv.entries {
		src, err := p.EgressSource(ctx, e.name)
		if err != nil {
			return nil, "", fmt.Errorf("luapolicy: egress pool %s: %w", name, err)
		}
		fmt.Fprintf(&sig, "|%s=%d@%p", e.name, e.weight, src)
		entries = append(entries, egress.WeightedSource{Source: src, Weight: e.weight})
	}
	return egress.NewPool(pv.name, entries...), sig.String(), nil
}

// EgressPools returns an egress pool for every pool name the policy
// names at load time (pools of policy-extras.sources and the egress_pool
// of policy-extras.queue entries), each backed by get_egress_pool. A pool
// re-reads its definition when the definition's ttl has passed, keeping
// its round-robin position otherwise. nil when the policy has no
// get_egress_pool handler.
//
// mta.Options.EgressPools is a fixed map, so a pool that a custom
// get_queue_config handler names without the sources helper must be
// listed with AddPoolName before calling EgressPools.
func (p *Policy) EgressPools() map[string]egress.Pool {
	if !p.HasHandler("get_egress_pool") {
		return nil
	}
	p.mu.Lock()
	names := sortedKeys(p.poolNames)
	srcs := p.sources
	p.mu.Unlock()
	out := map[string]egress.Pool{}
	if srcs != nil && p.events["get_egress_pool"] == 1 {
		// Only policy-extras.sources defines pools: use its pools, which
		// keep a selection cursor per queue.
		for n, pool := range srcs.EgressPools() {
			out[n] = pool
		}
	}
	for _, n := range names {
		if _, ok := out[n]; ok {
			continue
		}
		v, _ := p.pools.LoadOrStore(n, &lazyPool{p: p, name: n})
		out[n] = v.(*lazyPool)
	}
	return out
}

// poolMap is EgressPools, built once per Policy (after load).
func (p *Policy) poolMap() map[string]egress.Pool {
	p.poolMapOnce.Do(func() { p.poolMapVal = p.EgressPools() })
	return p.poolMapVal
}

// AddPoolName makes EgressPools include a pool named name.
func (p *Policy) AddPoolName(name string) {
	p.mu.Lock()
	p.poolNames[name] = true
	p.mu.Unlock()
}

// lazyPool is an egress.Pool whose members come from get_egress_pool.
type lazyPool struct {
	p    *Policy
	name string

	mu      sync.Mutex
	cur     *egress.WeightedPool
	sig     string
	expires time.Time
}

func (lp *lazyPool) Name() string { return lp.name }

// Next returns the next source by weight. If the pool cannot be built (a
// handler error), the error is logged and the previous definition used;
// without one Next returns nil, which the server treats as a temporary
// failure rather than sending from an address the policy did not name.
func (lp *lazyPool) Next() egress.EgressSource {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	now := nowFunc()
	if lp.cur == nil || now.After(lp.expires) {
		ctx, cancel := context.WithTimeout(context.Background(), lp.p.timeout())
		wp, sig, err := lp.p.egressPool(ctx, lp.name)
		cancel()
		if err != nil {
			lp.p.log.Error("egress pool unavailable; using the default source", "pool", lp.name, "err", err)
			if lp.cur == nil {
				return nil
			}
		} else {
			if lp.cur == nil || sig != lp.sig {
				lp.cur, lp.sig = wp, sig
			}
			lp.expires = now.Add(defaultTTL)
		}
	}
	return lp.cur.Next()
}
