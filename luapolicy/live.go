package luapolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/shaping"
)

// Live is a policy that can be replaced while a server runs, like
// KumoMTA's configuration epochs. Its hooks always use the current
// Policy. Reload evaluates init.lua and the files it reads again; when the
// new policy loads cleanly, new work uses it (with fresh memo caches),
// while calls already running finish with the policy they started with.
// A policy that fails to load is reported and the running one kept.
// Connections and queued mail are untouched: spools, logs and listeners
// are set up once, from the first policy, and a reload does not change
// them.
type Live struct {
	path string
	opts Options

	cur   atomic.Pointer[Policy]
	epoch atomic.Uint64
	srv   atomic.Pointer[mta.Server] // started by Start: reloads apply memory limits

	mu      sync.Mutex // serializes Reload
	stamps  map[string]fileStamp
	retired []*Policy

	poolsMu sync.Mutex
	pools   map[string]*livePool
}

type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

// LoadLive loads the policy at path (see Load) for use with Reload.
func LoadLive(path string, opts Options) (*Live, error) {
	p, err := Load(path, opts)
	if err != nil {
		return nil, err
	}
	l := &Live{path: path, opts: opts, pools: map[string]*livePool{}}
	l.cur.Store(p)
	l.epoch.Store(1)
	l.stamps = stampFiles(p.Files())
	return l, nil
}

// Policy returns the current policy.
func (l *Live) Policy() *Policy { return l.cur.Load() }

// Epoch counts successful loads: 1 after LoadLive, one more per Reload.
func (l *Live) Epoch() uint64 { return l.epoch.Load() }

// Reload loads the policy file again and, if it loads cleanly, makes it
// the current policy. On error the current policy stays in force.
func (l *Live) Reload() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, err := Load(l.path, l.opts)
	if err != nil {
		return fmt.Errorf("luapolicy: reload of %s failed; keeping the running policy: %w", l.path, err)
	}
	// Automation actions in force (suspensions, SetConfig) and threshold
	// counts survive the reload, as KumoMTA's TSA state does.
	if next, prev := p.shapingEngine(), l.cur.Load().shapingEngine(); next != nil && prev != nil {
		next.InheritActions(prev)
	}
	old := l.cur.Swap(p)
	l.epoch.Add(1)
	if srv := l.srv.Load(); srv != nil && p.MemoryLimits() != (mta.MemoryLimits{}) {
		srv.SetMemoryLimits(p.MemoryLimits()) // kumo.set_memory_* of the new policy
	}
	l.stamps = stampFiles(p.Files())
	// Idle states of the old policy are released now; states still in
	// use finish their call and are collected with it.
	old.Close()
	l.retired = append(l.retired, old)
	if len(l.retired) > 4 {
		l.retired = l.retired[1:]
	}
	return nil
}

// Close releases the current policy's idle Lua states.
func (l *Live) Close() {
	l.cur.Load().Close()
}

func stampFiles(files []string) map[string]fileStamp {
	m := make(map[string]fileStamp, len(files))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			m[f] = fileStamp{}
			continue
		}
		m[f] = fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
	}
	return m
}

// Changed reports whether init.lua or a file the policy read has changed
// (modification time, size, or existence) since the current policy was
// loaded.
func (l *Live) Changed() bool {
	l.mu.Lock()
	stamps := l.stamps
	l.mu.Unlock()
	for f, old := range stamps {
		fi, err := os.Stat(f)
		now := fileStamp{}
		if err == nil {
			now = fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
		}
		if now != old {
			return true
		}
	}
	return false
}

// Watch checks the policy's files every interval until ctx ends and
// reloads when one changed. report receives the outcome of each reload
// attempt (nil on success).
func (l *Live) Watch(ctx context.Context, interval time.Duration, report func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if l.Changed() {
				err := l.Reload()
				if report != nil {
					report(err)
				}
				if err != nil {
					// Do not retry the same broken files every tick.
					l.mu.Lock()
					l.stamps = stampFiles(keys(l.stamps))
					l.mu.Unlock()
				}
			}
		}
	}
}

func keys(m map[string]fileStamp) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// MTAPolicy returns hooks that call the current policy's.
func (l *Live) MTAPolicy() mta.Policy {
	return mta.Policy{
		MessageReceived: func(ctx context.Context, msg *mta.Message) error {
			return l.cur.Load().MessageReceived(ctx, msg)
		},
		QueueConfig: func(queue, campaign, tenant, domain, routingDomain string) (mta.QueueConfig, error) {
			p := l.cur.Load()
			if !p.HasHandler("get_queue_config") {
				return mta.QueueConfig{}, nil
			}
			return p.QueueConfig(queue, campaign, tenant, domain, routingDomain)
		},
	}
}

// DomainLookup returns a lookup that asks the current policy; a policy
// without get_listener_domain knows no listener domains.
func (l *Live) DomainLookup() listener.DomainLookup {
	return listener.DomainLookupFunc(func(ctx context.Context, domain, listenerAddr string) (*listener.ListenerDomain, error) {
		p := l.cur.Load()
		if !p.HasHandler("get_listener_domain") {
			return nil, nil
		}
		return p.LookupListenerDomain(ctx, domain, listenerAddr)
	})
}

// ListenerHooks returns session hooks that fire the current policy's
// events. Which hooks exist (and so whether AUTH is offered) follows the
// policy at the time of the call: an event that a reloaded policy starts
// handling needs a restart; one it stops handling is skipped.
func (l *Live) ListenerHooks() listener.Hooks {
	h := l.cur.Load().ListenerHooks()
	if h.Connect != nil {
		h.Connect = func(ctx context.Context, s *listener.SessionInfo) error {
			return l.cur.Load().ConnectionAccepted(ctx, s)
		}
	}
	if h.EHLO != nil {
		h.EHLO = func(ctx context.Context, s *listener.SessionInfo, domain string, ext []string) ([]string, error) {
			return l.cur.Load().EHLO(ctx, s, domain, ext)
		}
	}
	if h.AuthPlain != nil {
		h.AuthPlain = func(ctx context.Context, s *listener.SessionInfo, authz, authc, password string) (bool, error) {
			return l.cur.Load().AuthPlain(ctx, s, authz, authc, password)
		}
	}
	if h.MailFrom != nil {
		h.MailFrom = func(ctx context.Context, s *listener.SessionInfo, sender string) error {
			return l.cur.Load().MailFrom(ctx, s, sender)
		}
	}
	if h.RcptTo != nil {
		h.RcptTo = func(ctx context.Context, s *listener.SessionInfo, rcpt string) error {
			return l.cur.Load().RcptTo(ctx, s, rcpt)
		}
	}
	return h
}

// Shaper returns a shaper that asks the current policy; a policy without
// get_egress_path_config gives KumoMTA's defaults.
func (l *Live) Shaper() shaping.Shaper { return liveShaper{l} }

type liveShaper struct{ l *Live }

func (s liveShaper) PathConfig(ctx context.Context, source, site, domain string) (shaping.PathConfig, error) {
	if sh := s.l.cur.Load().Shaper(); sh != nil {
		return sh.PathConfig(ctx, source, site, domain)
	}
	return shaping.Default(), nil
}

func (s liveShaper) Observe(ctx context.Context, source, site, domain string, resp shaping.Response) []shaping.Action {
	if sh := s.l.cur.Load().Shaper(); sh != nil {
		return sh.Observe(ctx, source, site, domain, resp)
	}
	return nil
}

// EgressPools returns a pool for every pool name the first policy knows
// (see Policy.EgressPools); each picks from the current policy's pool of
// that name. A pool that a reloaded policy adds needs a restart.
func (l *Live) EgressPools() map[string]egress.Pool {
	out := map[string]egress.Pool{}
	l.poolsMu.Lock()
	defer l.poolsMu.Unlock()
	for name := range l.cur.Load().poolMap() {
		lp := l.pools[name]
		if lp == nil {
			lp = &livePool{l: l, name: name}
			l.pools[name] = lp
		}
		out[name] = lp
	}
	return out
}

// livePool is an egress.KeyedPool that delegates to the current policy.
type livePool struct {
	l    *Live
	name string
}

func (lp *livePool) Name() string { return lp.name }

func (lp *livePool) current() egress.Pool {
	if p := lp.l.cur.Load().poolMap()[lp.name]; p != nil {
		return p
	}
	return nil
}

func (lp *livePool) Next() egress.EgressSource {
	if p := lp.current(); p != nil {
		return p.Next()
	}
	return nil
}

func (lp *livePool) NextFor(key string) egress.EgressSource {
	p := lp.current()
	if kp, ok := p.(egress.KeyedPool); ok {
		return kp.NextFor(key)
	}
	if p != nil {
		return p.Next()
	}
	return nil
}

// ServerOptions is Policy.ServerOptions with the hooks of the Live
// policy.
func (l *Live) ServerOptions(base mta.Options) (mta.Options, error) {
	opts, err := l.cur.Load().ServerOptions(base)
	if err != nil {
		return opts, err
	}
	opts.Policy = l.MTAPolicy()
	if base.Policy.MessageReceived != nil || base.Policy.QueueConfig != nil {
		return opts, errors.New("luapolicy: Live.ServerOptions: base.Policy must be empty")
	}
	opts.Shaper = l.Shaper()
	opts.EgressPools = l.EgressPools()
	for k, v := range base.EgressPools {
		opts.EgressPools[k] = v
	}
	return opts, nil
}

// Start is Policy.Start with the hooks of the Live policy: the server
// follows reloads.
func (l *Live) Start(base mta.Options) (*mta.Server, []net.Addr, error) {
	srv, addrs, err := l.cur.Load().start(base, l.ServerOptions, l.DomainLookup(), l.ListenerHooks(), l.PurgeCache)
	if err == nil {
		l.srv.Store(srv)
	}
	return srv, addrs, err
}
