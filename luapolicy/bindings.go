package luapolicy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/emersion/go-smtp"
	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta/queues"
	"github.com/mtakit/mtakit/shaping"
)

// The sources, queue and shaping helpers and the kumo.make_queue_config,
// make_egress_source and make_egress_path constructors are thin bindings
// to the Go loaders of packages mta/queues, egress and shaping: a Lua
// parameter table is handed to the loader as the equivalent TOML block,
// so that every key is checked by the one implementation of its format.

// encodeBlock encodes v as a TOML document.
func encodeBlock(v map[string]any) ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// synthLine matches the "name:LINE: " or "name:LINE:COL: " prefix that
// loaders put on errors in the synthesized document.
var synthLine = regexp.MustCompile(`(kumo\.make_[a-z_]+):\d+(:\d+)?:? ?`)

// synthKey matches the key path of the synthesized block in loader
// errors ("queue.default.", "source.NAME.", "default.").
var (
	synthUnknown = regexp.MustCompile(`: (?:[^:]*: )?unknown key (?:queue\.default\.|source\.[^.\s]+\.|default\.)?([\w.]+)(?: \(not a make_egress_path option\))?`)
	synthKey     = regexp.MustCompile(`: (?:queue\.default|source\.[^.\s]+|default)\.([\w.]+): `)
)

// cleanSynth rewrites a loader error about a synthesized document so that
// it reads as an error about the function's parameters.
func cleanSynth(err error) error {
	msg := synthLine.ReplaceAllString(err.Error(), "$1: ")
	msg = synthUnknown.ReplaceAllString(msg, `: unknown parameter "$1"`)
	msg = synthKey.ReplaceAllString(msg, `: parameter "$1": `)
	return errors.New(msg)
}

func asParams(fn string, v any) (map[string]any, error) {
	switch m := v.(type) {
	case map[string]any:
		return m, nil
	case []any:
		if len(m) == 0 {
			return map[string]any{}, nil
		}
	case nil:
		return map[string]any{}, nil
	}
	return nil, fmt.Errorf("%s: expected a table of named parameters, got %s", fn, typeName(v))
}

// newQueueConfig builds a make_queue_config value with package queues.
func newQueueConfig(params any) (*queueConfigValue, error) {
	const fn = "kumo.make_queue_config"
	m, err := asParams(fn, params)
	if err != nil {
		return nil, err
	}
	for k, v := range m {
		// queues.toml reads unknown table-valued keys of a domain block
		// as tenants; a make_queue_config has none.
		if _, isTable := v.(map[string]any); isTable && k != "protocol" {
			return nil, fmt.Errorf("%s: unknown parameter %q", fn, k)
		}
	}
	doc, err := encodeBlock(map[string]any{"queue": map[string]any{"default": m}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	cfg, err := queues.Parse(fn, doc)
	if err != nil {
		return nil, cleanSynth(err)
	}
	r := cfg.Resolve("", "", "")
	return queueValueOf(r.Params), nil
}

func queueValueOf(p queues.Params) *queueConfigValue {
	q := &queueConfigValue{cfg: p.QueueConfig(), refresh: defaultTTL}
	if p.RefreshInterval != nil && *p.RefreshInterval > 0 {
		q.refresh = *p.RefreshInterval
	}
	return q
}

// newEgressSource builds a make_egress_source value with package egress.
func newEgressSource(params any) (*sourceValue, error) {
	const fn = "kumo.make_egress_source"
	m, err := asParams(fn, params)
	if err != nil {
		return nil, err
	}
	name, _ := m["name"].(string)
	if name == "" {
		return nil, fmt.Errorf("%s: parameter \"name\": required", fn)
	}
	body := make(map[string]any, len(m))
	for k, v := range m {
		if k != "name" {
			body[k] = v
		}
	}
	doc, err := encodeBlock(map[string]any{"source": map[string]any{name: body}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	srcs, err := egress.ParseSources(fn, doc)
	if err != nil {
		return nil, cleanSynth(err)
	}
	return sourceValueOf(srcs.Sources[name]), nil
}

func sourceValueOf(src *egress.Source) *sourceValue {
	sv := &sourceValue{src: src, ttl: defaultTTL}
	if ttl := src.Options().TTL; ttl > 0 {
		sv.ttl = ttl
	}
	return sv
}

// newEgressPath builds a make_egress_path value with package shaping: the
// parameters become the ["default"] block of a shaping document.
func newEgressPath(params any) (*pathValue, error) {
	const fn = "kumo.make_egress_path"
	m, err := asParams(fn, params)
	if err != nil {
		return nil, err
	}
	doc, err := encodeBlock(map[string]any{"default": m})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	sh, err := shaping.Load(context.Background(), shaping.Options{}, shaping.File{Name: fn, Data: doc})
	if err != nil {
		return nil, cleanSynth(err)
	}
	pc, err := sh.PathConfig(context.Background(), "", "", "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return &pathValue{cfg: pc, refresh: refreshOf(pc)}, nil
}

// refreshOf returns a path's refresh_interval (default 60 s).
func refreshOf(pc shaping.PathConfig) time.Duration {
	if v, ok := pc.Other["refresh_interval"]; ok {
		switch d := v.(type) {
		case time.Duration:
			return d
		case string:
			if x, err := shaping.ParseDuration(d); err == nil {
				return x
			}
		}
	}
	return defaultTTL
}

// --- kumo.make_* ---

// constructed caches the values of kumo.make_queue_config,
// make_egress_source and make_egress_path by their parameters: a policy
// typically builds the same few configurations over and over, and the
// loaders behind them parse a TOML document each time.
func (s *state) constructed(fn string, params any, build func(any) (any, error)) (any, error) {
	key := fmt.Sprintf("%s %#v", fn, params)
	now := nowFunc()
	if v, ok := s.p.constructed.get(key, now); ok {
		return v, nil
	}
	v, err := build(params)
	if err != nil {
		return nil, err
	}
	s.p.constructed.put(key, v, defaultTTL, now)
	return v, nil
}

func (s *state) makeQueueConfig(L *lua.LState) int {
	v, err := s.constructed("queue", s.table(1), func(p any) (any, error) { return newQueueConfig(p) })
	q, _ := v.(*queueConfigValue)
	if err != nil {
		s.fail(err)
		q = &queueConfigValue{refresh: defaultTTL}
	}
	L.Push(toLua(L, q))
	return 1
}

func (s *state) makeEgressSource(L *lua.LState) int {
	r, err := s.constructed("source", s.table(1), func(p any) (any, error) { return newEgressSource(p) })
	v, _ := r.(*sourceValue)
	if err != nil {
		s.fail(err)
		v = sourceValueOf(egress.DefaultSource())
	}
	L.Push(toLua(L, v))
	return 1
}

func (s *state) makeEgressPath(L *lua.LState) int {
	r, err := s.constructed("path", s.table(1), func(p any) (any, error) { return newEgressPath(p) })
	v, _ := r.(*pathValue)
	if err != nil {
		s.fail(err)
		v = &pathValue{cfg: shaping.Default(), refresh: defaultTTL}
	}
	L.Push(toLua(L, v))
	return 1
}

// --- policy-extras.sources ---

func (s *state) sourcesSetup(L *lua.LState) int {
	s.once(L, "policy-extras.sources")
	files := s.fileList(L, 2, "sources")
	v, err := s.p.files.load("sources\x00"+strings.Join(files, "\x00"), func() (any, error) {
		return egress.LoadSources(files...)
	})
	if err != nil {
		s.fail(fmt.Errorf("policy-extras.sources: %w", err))
		return 0
	}
	srcs := v.(*egress.Sources)
	if s.primary {
		s.p.mu.Lock()
		s.p.sources = srcs
		for name := range srcs.Pools {
			s.p.poolNames[name] = true
		}
		s.p.mu.Unlock()
	}
	s.addHandler("get_egress_source", L.NewFunction(func(L *lua.LState) int {
		src := srcs.Sources[L.CheckString(1)]
		if src == nil {
			L.Push(lua.LNil)
			return 1
		}
		L.Push(toLua(L, sourceValueOf(src)))
		return 1
	}))
	s.addHandler("get_egress_pool", L.NewFunction(func(L *lua.LState) int {
		name := L.CheckString(1)
		wp := srcs.Pools[name]
		if wp == nil {
			L.Push(lua.LNil)
			return 1
		}
		pv := &poolValue{name: name, ttl: defaultTTL}
		for _, e := range wp.Entries() {
			pv.entries = append(pv.entries, poolEntry{name: e.Source.Name(), weight: e.Weight})
		}
		L.Push(toLua(L, pv))
		return 1
	}))
	return 0
}

// addHandler registers a helper's handler as kumo.on does.
func (s *state) addHandler(event string, fn *lua.LFunction) {
	if !multiEvents[event] && len(s.handlers[event]) > 0 {
		s.L.RaiseError("kumo.on: event %q already has a handler", event)
	}
	s.handlers[event] = append(s.handlers[event], fn)
	if s.helperFns == nil {
		s.helperFns = map[*lua.LFunction]string{}
	}
	s.helperFns[fn] = event
}

// --- policy-extras.queue ---

func (s *state) queueSetup(L *lua.LState) int {
	s.once(L, "policy-extras.queue")
	files := s.fileList(L, 2, "queue")
	return s.queueHelper(L, files, false)
}

func (s *state) queueSetupWithOptions(L *lua.LState) int {
	s.once(L, "policy-extras.queue")
	f := newFields("policy-extras.queue:setup_with_options", s.table(2))
	var names []string
	var skip, epoch bool
	f.strings("file_names", &names)
	f.boolean("skip_queue_config_hook", &skip)
	f.boolean("invalidate_with_epoch", &epoch)
	if err := f.done(); err != nil {
		s.fail(err)
	}
	for i, n := range names {
		names[i] = s.p.resolvePath(n)
	}
	s.p.track(names...)
	return s.queueHelper(L, names, skip)
}

func (s *state) queueHelper(L *lua.LState, files []string, skipHook bool) int {
	v, err := s.p.files.load("queue\x00"+strings.Join(files, "\x00"), func() (any, error) {
		return queues.Load(files...)
	})
	var cfg *queues.Config
	if err != nil {
		s.fail(fmt.Errorf("policy-extras.queue: %w", err))
		cfg = &queues.Config{}
	} else {
		cfg = v.(*queues.Config)
	}
	if s.primary {
		cfg.CheckPools(func(name string) bool {
			s.p.mu.Lock()
			s.p.poolNames[name] = true
			s.p.mu.Unlock()
			return true
		})
		s.p.mu.Lock()
		s.p.queues = cfg
		s.p.mu.Unlock()
	}
	resolve := func(L *lua.LState, domain, tenant, campaign string) {
		r := cfg.Resolve(domain, tenant, campaign)
		if !r.Matched {
			L.Push(lua.LNil)
			return
		}
		L.Push(toLua(L, queueValueOf(r.Params)))
	}
	if !skipHook {
		s.addHandler("get_queue_config", L.NewFunction(func(L *lua.LState) int {
			resolve(L, L.CheckString(1), L.OptString(2, ""), L.OptString(3, ""))
			return 1
		}))
	}
	helper := L.NewTable()
	L.SetFuncs(helper, map[string]lua.LGFunction{
		"apply": func(L *lua.LState) int {
			ud := L.CheckUserData(2)
			lm, ok := ud.Value.(*luaMessage)
			if !ok {
				L.ArgError(2, "message expected (queue_helper:apply(msg))")
			}
			if err := cfg.Apply(lm.m); err != nil {
				raiseReject(L, err)
			}
			return 0
		},
		"resolve_config": func(L *lua.LState) int {
			resolve(L, L.CheckString(2), L.OptString(3, ""), L.OptString(4, ""))
			return 1
		},
	})
	s.strict(helper, "queue_helper")
	L.Push(helper)
	return 1
}

// raiseReject raises a kumo.reject for an error carrying an SMTP reply
// and a plain Lua error otherwise.
func raiseReject(L *lua.LState, err error) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		text := se.Message
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			text = fmt.Sprintf("%d.%d.%d %s", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		}
		ud := L.NewUserData()
		ud.Value = &rejectError{code: se.Code, text: text}
		L.Error(ud, 0)
	}
	L.RaiseError("%v", err)
}

// --- policy-extras.shaping ---

// shapingKnown are the options of setup_with_automation.
var shapingIgnored = []string{"tsa_queue_config", "back_pressure", "cache_ttl", "pre_filter", "skip_log_record_types",
	"additional_skip_log_record_types", "load_validation_options", "validation_options", "publish_timeout",
	"publish_pool_idle_timeout", "allow_stale_shaping_data", "shaping_data_populate_timeout",
	"retry_shaping_data_fetch_on_populate_timeout"}

func (s *state) shapingSetup(L *lua.LState) int {
	s.once(L, "policy-extras.shaping")
	var extra []string
	if L.Get(2) != lua.LNil {
		extra = s.fileList(L, 2, "shaping")
	}
	fn, _ := s.shapingHelper(L, extra, false, nil, nil)
	L.Push(fn)
	return 1
}

func (s *state) shapingSetupWithAutomation(L *lua.LState) int {
	s.once(L, "policy-extras.shaping")
	f := newFields("policy-extras.shaping:setup_with_automation", s.table(2))
	var extra, publish, subscribe []string
	var noDefault bool
	f.strings("extra_files", &extra)
	f.boolean("no_default_files", &noDefault)
	f.strings("publish", &publish)
	f.strings("subscribe", &subscribe)
	ignored := f.ignore(shapingIgnored...)
	if err := f.done(); err != nil {
		s.fail(err)
	}
	s.warnIgnored("policy-extras.shaping:setup_with_automation", ignored)
	for i, e := range extra {
		extra[i] = s.p.resolvePath(e)
	}
	s.p.track(extra...)
	fn, sh := s.shapingHelper(L, extra, noDefault, publish, subscribe)
	t := L.NewTable()
	t.RawSetString("get_egress_path_config", fn)
	t.RawSetString("setup_publish", L.NewFunction(func(L *lua.LState) int { return 0 }))
	t.RawSetString("load_shaping_data", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LBool(sh != nil))
		return 1
	}))
	L.Push(t)
	return 1
}

// shapingHelper loads the shaping files (the community file first unless
// noDefault) with package shaping and returns the get_egress_path_config
// handler. The files are loaded once per Policy, after the init event
// (so that kumo.dns.configure_resolver applies to the MX lookups of
// mx_rollup blocks); see Policy.finishHelpers.
func (s *state) shapingHelper(L *lua.LState, extra []string, noDefault bool, publish, subscribe []string) (*lua.LFunction, *shapingHelper) {
	paths := slices.Clone(extra)
	if !noDefault {
		paths = append([]string{shaping.DefaultFilePath}, paths...)
	}
	if (len(publish) > 0 || len(subscribe) > 0) && s.primary {
		s.p.warn(fmt.Sprintf("%s policy-extras.shaping: Traffic Shaping Automation publish/subscribe (%s) is not supported: mtakit applies the automation rules of the shaping files in process, without a TSA daemon",
			s.where(), strings.Join(append(slices.Clone(publish), subscribe...), ", ")))
	}
	h := &shapingHelper{paths: paths}
	if s.primary {
		s.p.mu.Lock()
		s.p.shapingHelpers = append(s.p.shapingHelpers, h)
		s.p.mu.Unlock()
	}
	key := "shaping\x00" + strings.Join(paths, "\x00")
	fn := L.NewFunction(func(L *lua.LState) int {
		sh, err := s.p.shapingData(key, paths)
		if err != nil {
			L.RaiseError("policy-extras.shaping: %v", err)
		}
		ctx := L.Context()
		if ctx == nil {
			ctx = context.Background()
		}
		pc, err := sh.PathConfig(ctx, L.CheckString(2), L.CheckString(3), L.CheckString(1))
		if err != nil {
			L.RaiseError("policy-extras.shaping: %v", err)
		}
		L.Push(toLua(L, &pathValue{cfg: pc, refresh: refreshOf(pc)}))
		return 1
	})
	h.key = key
	if s.helperFns == nil {
		s.helperFns = map[*lua.LFunction]string{}
	}
	s.helperFns[fn] = "get_egress_path_config"
	return fn, h
}

// shapingHelper is one shaping helper of the primary state.
type shapingHelper struct {
	key   string
	paths []string
}

// shapingData returns the loaded shaping configuration for paths.
func (p *Policy) shapingData(key string, paths []string) (*shaping.Shaping, error) {
	v, err := p.files.load(key, func() (any, error) {
		files, err := shaping.ReadFiles(paths...)
		if err != nil {
			return nil, err
		}
		opts := shaping.Options{Logger: p.log, SiteName: egress.SiteName}
		if r := p.mxResolver(); r != nil {
			opts.LookupMX = r.MXHostNames // by preference, null MX as shaping.ErrNullMX
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sh, err := shaping.Load(ctx, opts, files...)
		if err != nil {
			return nil, err
		}
		for _, w := range sh.Warnings() {
			p.warn("shaping: " + w)
		}
		return sh, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*shaping.Shaping), nil
}

// mxResolver returns the resolver for load-time MX lookups: Options.Resolver,
// else one built from kumo.dns.configure_resolver, else the system's.
func (p *Policy) mxResolver() *egress.Resolver {
	if p.opts.Resolver != nil {
		return p.opts.Resolver
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resolverObj != nil {
		return p.resolverObj
	}
	ro := egress.ResolverOptions{Logger: p.log}
	if p.resolver != nil {
		ro = *p.resolver
	}
	r, err := egress.NewResolver(ro)
	if err != nil {
		p.log.Warn("no DNS resolver for shaping MX rollup", "err", err)
		return nil
	}
	p.resolverObj = r
	return r
}

// finishHelpers runs after the init event: it loads the shaping files of
// the shaping helpers and, when a helper's handler is the only handler of
// its event, lets the hooks call the Go implementation directly.
func (p *Policy) finishHelpers(s *state) error {
	p.mu.Lock()
	helpers := slices.Clone(p.shapingHelpers)
	p.mu.Unlock()
	for _, h := range helpers {
		sh, err := p.shapingData(h.key, h.paths)
		if err != nil {
			return fmt.Errorf("%s: policy-extras.shaping: %w", p.file, err)
		}
		if fns := s.handlers["get_egress_path_config"]; len(fns) == 1 && s.helperFns[fns[0]] != "" && len(helpers) == 1 {
			p.directShaper = sh
		}
		p.mu.Lock()
		p.extraShaper = sh
		p.mu.Unlock()
	}
	if fns := s.handlers["get_queue_config"]; len(fns) == 1 && s.helperFns[fns[0]] == "get_queue_config" && p.queues != nil {
		p.directQueues = p.queues
	}
	if fns := s.handlers["get_listener_domain"]; len(fns) == 1 && s.helperFns[fns[0]] == "get_listener_domain" {
		p.directDomains = s.listenerTable
	}
	if p.opts.Check && p.queues != nil && p.sources != nil {
		srcs := p.sources
		if err := p.queues.CheckPools(func(name string) bool { _, ok := srcs.Pools[name]; return ok }); err != nil {
			p.addError(err)
		}
	}
	return nil
}
