package luapolicy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// Spools returns the kumo.define_spool calls of the init event.
func (p *Policy) Spools() []SpoolConfig {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]SpoolConfig(nil), p.spools...)
}

// LogConfig returns the kumo.configure_local_logs settings, or nil.
func (p *Policy) LogConfig() *LogConfig {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logCfg
}

// Classifier returns the bounce classifier of
// kumo.configure_bounce_classifier, or nil when the policy does not
// configure one.
func (p *Policy) Classifier() mta.BounceClassifier {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.classifier == nil {
		return nil
	}
	return p.classifier
}

// ESMTPListeners returns the kumo.start_esmtp_listener calls, with the
// listener domains of the policy (get_listener_domain) and the session
// event hooks (ListenerHooks) already set.
func (p *Policy) ESMTPListeners() []ListenerConfig {
	p.mu.Lock()
	out := append([]ListenerConfig(nil), p.esmtp...)
	p.mu.Unlock()
	d := p.DomainLookup()
	hooks := p.ListenerHooks()
	for i := range out {
		if d != nil {
			out[i].Domains = d
		}
		out[i].Hooks = hooks
	}
	return out
}

// HTTPListeners returns the kumo.start_http_listener calls.
func (p *Policy) HTTPListeners() []HTTPListener {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]HTTPListener(nil), p.http...)
}

// ResolverOptions returns the kumo.dns.configure_resolver settings, or
// nil when the policy keeps the system resolver.
func (p *Policy) ResolverOptions() *egress.ResolverOptions {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resolver == nil {
		return nil
	}
	ro := *p.resolver
	return &ro
}

// OpenSpools opens the data and meta spools the policy defines. Both
// kinds KumoMTA knows, LocalDisk and RocksDB, are served by mtakit's
// badger spool (badgerspool.Open) at the given path; badger makes every
// store durable before it returns, whatever "flush" says. When the two
// spools share one path, one badger database holds both
// (badgerspool.OpenPair), which costs one sync per message instead of two.
func (p *Policy) OpenSpools(opts badgerspool.Options) (data, meta spool.Spool, err error) {
	var dataCfg, metaCfg *SpoolConfig
	for _, sc := range p.Spools() {
		switch sc.Name {
		case "data":
			dataCfg = &sc
		case "meta":
			metaCfg = &sc
		}
	}
	if dataCfg == nil || metaCfg == nil {
		return nil, nil, fmt.Errorf("luapolicy: %s: the init event must define both the \"data\" and the \"meta\" spool (kumo.define_spool)", p.file)
	}
	if opts.Logger == nil {
		opts.Logger = p.log
	}
	if filepath.Clean(dataCfg.Path) == filepath.Clean(metaCfg.Path) {
		d, m, err := badgerspool.OpenPair(dataCfg.Path, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("luapolicy: spool %s: %w", dataCfg.Path, err)
		}
		return d, m, nil
	}
	d, err := badgerspool.Open(dataCfg.Path, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("luapolicy: data spool %s: %w", dataCfg.Path, err)
	}
	m, err := badgerspool.Open(metaCfg.Path, opts)
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("luapolicy: meta spool %s: %w", metaCfg.Path, err)
	}
	return d, m, nil
}

// ServerOptions fills base with everything the policy provides except the
// spools and the log sink (which OpenSpools and logs.OpenLocal open): the
// hooks, the listener-independent parts (Shaper, EgressPools, Classifier,
// Resolver) and the log header and meta lists. Fields the policy does not
// configure keep base's value.
func (p *Policy) ServerOptions(base mta.Options) (mta.Options, error) {
	pol := p.MTAPolicy()
	if pol.MessageReceived != nil {
		base.Policy.MessageReceived = pol.MessageReceived
	}
	if pol.QueueConfig != nil {
		base.Policy.QueueConfig = pol.QueueConfig
	}
	if sh := p.Shaper(); sh != nil {
		base.Shaper = sh
	}
	if pools := p.EgressPools(); pools != nil {
		if base.EgressPools == nil {
			base.EgressPools = map[string]egress.Pool{}
		}
		for k, v := range pools {
			base.EgressPools[k] = v
		}
	}
	if c := p.Classifier(); c != nil {
		base.Classifier = c
	}
	if base.Resolver == nil && p.opts.Resolver != nil {
		base.Resolver = p.opts.Resolver
	}
	if ro := p.ResolverOptions(); ro != nil && base.Resolver == nil {
		r, err := egress.NewResolver(*ro)
		if err != nil {
			return base, fmt.Errorf("luapolicy: kumo.dns.configure_resolver: %w", err)
		}
		base.Resolver = r
	}
	if lc := p.LogConfig(); lc != nil {
		base.LogHeaders = append(base.LogHeaders, lc.Headers...)
		base.LogMeta = append(base.LogMeta, lc.Meta...)
	}
	for _, h := range p.LogHooks() {
		base.LogHeaders = append(base.LogHeaders, h.Headers...)
		base.LogMeta = append(base.LogMeta, h.Meta...)
	}
	p.applyMemoryLimits(&base)
	if base.Logger == nil {
		base.Logger = p.log
	}
	return base, nil
}

// Start builds and starts a server from the policy: it opens the spools
// (OpenSpools) unless base has them, the local logs and the log hooks
// (OpenLogHooks, queued durably in a "loghooks" directory beside the data
// spool, in memory when the policy defines no spool), creates the mta.Server with ServerOptions and starts
// every ESMTP listener. The HTTP listeners are not started (see
// HTTPListeners). On error everything opened is closed again.
func (p *Policy) Start(base mta.Options) (srv *mta.Server, addrs []net.Addr, err error) {
	return p.start(base, p.ServerOptions, p.DomainLookup(), p.ListenerHooks(), p.PurgeCache)
}

func (p *Policy) start(base mta.Options, serverOptions func(mta.Options) (mta.Options, error), domains listener.DomainLookup, sessionHooks listener.Hooks, purge func() int) (srv *mta.Server, addrs []net.Addr, err error) {
	var closers []io.Closer
	defer func() {
		if err != nil {
			for _, c := range closers {
				c.Close()
			}
		}
	}()
	if base.DataSpool == nil || base.MetaSpool == nil {
		d, m, err := p.OpenSpools(badgerspool.Options{Logger: base.Logger})
		if err != nil {
			return nil, nil, err
		}
		base.DataSpool, base.MetaSpool = d, m
		closers = append(closers, d, m)
	}
	if lc := p.LogConfig(); lc != nil && base.Log == nil {
		l, err := logs.OpenLocal(lc.Local)
		if err != nil {
			return nil, nil, fmt.Errorf("luapolicy: kumo.configure_local_logs: %w", err)
		}
		base.Log = l
		closers = append(closers, l)
	}
	hookDir := ""
	for _, sc := range p.Spools() {
		if sc.Name == "data" {
			hookDir = filepath.Join(filepath.Dir(filepath.Clean(sc.Path)), "loghooks")
		}
	}
	hooks, err := p.OpenLogHooks(hookDir)
	if err != nil {
		return nil, nil, err
	}
	if len(hooks) > 0 {
		base.Log = logs.Multi(append([]logs.Sink{base.Log}, hooks...)...)
		for _, h := range hooks {
			closers = append(closers, h)
		}
	}
	opts, err := serverOptions(base)
	if err != nil {
		return nil, nil, err
	}
	srv, err = mta.New(opts)
	if err != nil {
		return nil, nil, err
	}
	srv.RegisterCache("luapolicy", purge)
	closers = []io.Closer{srv}
	for _, lc := range p.ESMTPListeners() {
		lc.Domains = domains
		lc.Hooks = sessionHooks
		addr, err := srv.ListenSMTP(lc.Config)
		if err != nil {
			return nil, nil, fmt.Errorf("luapolicy: %s kumo.start_esmtp_listener: %w", lc.Line, err)
		}
		addrs = append(addrs, addr)
	}
	return srv, addrs, nil
}

// checkResources verifies, for Options.Check, what Load does not touch
// otherwise: that the listeners' certificates load (they did, at the call)
// and that spool and log directories can be created.
func (p *Policy) checkResources() {
	for _, sc := range p.Spools() {
		if err := checkDirCreatable(sc.Path); err != nil {
			p.addError(fmt.Errorf("%s: kumo.define_spool %q: %w", p.file, sc.Name, err))
		}
	}
	if lc := p.LogConfig(); lc != nil {
		if err := checkDirCreatable(lc.Local.LogDir); err != nil {
			p.addError(fmt.Errorf("%s: kumo.configure_local_logs: %w", p.file, err))
		}
	}
	names := map[string]bool{}
	for _, sc := range p.Spools() {
		names[sc.Name] = true
	}
	if len(names) > 0 && (!names["data"] || !names["meta"]) {
		p.addError(fmt.Errorf("%s: the init event must define both the \"data\" and the \"meta\" spool", p.file))
	}
}

// checkDirCreatable reports whether dir exists as a directory or its
// nearest existing ancestor is a directory (so MkdirAll could create it).
func checkDirCreatable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: %s is not a directory", dir, d)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
