package luapolicy

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// state is one Lua state that has evaluated init.lua, with the handlers
// it registered. Only one goroutine uses a state at a time.
type state struct {
	p          *Policy
	L          *lua.LState
	primary    bool // the state whose init event configures the server
	handlers   map[string][]*lua.LFunction
	msgMeta    *lua.LTable // metatable of message objects
	addrMeta   *lua.LTable // metatable of address objects
	connMetaMT *lua.LTable // metatable of conn_meta objects
	// emptyConnMeta is the conn_meta of get_listener_domain calls.
	emptyConnMeta lua.LValue
	// helperFns are the handlers registered by policy-extras helpers,
	// with their event.
	helperFns map[*lua.LFunction]string
	// listenerTable is the data of policy-extras.listener_domains.
	listenerTable domainTable
}

// firedEvents are the events mtakit calls handlers for; validate_config
// runs in check mode (Options.Check), as under "kumod --validate".
var firedEvents = map[string]bool{
	"pre_init": true, "init": true, "get_listener_domain": true, "smtp_server_message_received": true,
	"http_message_generated": true, "get_queue_config": true, "get_egress_source": true, "get_egress_pool": true,
	"get_egress_path_config": true, "validate_config": true,
	// Session events (session.go).
	"smtp_server_connection_accepted": true, "smtp_server_ehlo": true, "smtp_server_auth_plain": true,
	"smtp_server_mail_from": true, "smtp_server_mail_rcpt_to": true,
}

// multiEvents may have several handlers, called in registration order
// until one returns a value (KumoMTA's "Multiple" events).
var multiEvents = map[string]bool{
	"get_queue_config":            true,
	"throttle_insert_ready_queue": true,
	"pre_init":                    true,
	"validate_config":             true,
	"should_enqueue_log_record":   true,
}

func (p *Policy) newState(primary bool) (*state, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout())
	defer cancel()
	return p.newStateCtx(ctx, primary)
}

// newStateCtx creates a state and evaluates init.lua in it; ctx bounds
// the evaluation.
func (p *Policy) newStateCtx(ctx context.Context, primary bool) (*state, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	s := &state{p: p, L: L, primary: primary, handlers: map[string][]*lua.LFunction{}}
	kumo := s.kumoModule()
	L.SetGlobal("kumo", kumo)
	// print goes to the policy's logger, as in KumoMTA.
	L.SetGlobal("print", L.NewFunction(s.logFunc("info")))
	L.PreloadModule("kumo", func(L *lua.LState) int { L.Push(kumo); return 1 })
	s.preloadExtras()
	if pkg, ok := L.GetGlobal("package").(*lua.LTable); ok {
		dir := p.dir
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		pkg.RawSetString("path", lua.LString(filepath.Join(dir, "?.lua")+";"+lua.LuaPathDefault))
	}
	s.msgMeta = s.messageMetatable()
	s.addrMeta = s.addressMetatable()
	s.connMetaMT = s.connMetaMetatable()
	s.emptyConnMeta = s.connMeta(nil)

	L.SetContext(ctx)
	L.Push(L.NewFunctionFromProto(p.proto))
	err := L.PCall(0, 0, nil)
	L.RemoveContext()
	if err != nil {
		L.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("luapolicy: %s: evaluation did not finish within %v (a loop?): %w", p.file, p.timeout(), luaError(err))
		}
		return nil, luaError(err)
	}
	return s, nil
}

// runInit runs the pre_init and init handlers of the primary state.
func (s *state) runInit() error {
	for _, ev := range []string{"pre_init", "init"} {
		for _, fn := range s.handlers[ev] {
			if _, err := s.call(fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// call calls fn with args and returns its first result.
func (s *state) call(fn *lua.LFunction, args ...lua.LValue) (lua.LValue, error) {
	if err := s.L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, args...); err != nil {
		return lua.LNil, luaError(err)
	}
	ret := s.L.Get(-1)
	s.L.Pop(1)
	return ret, nil
}

// fire calls the handlers of event until one returns non-nil; it returns
// lua.LNil when there is no handler or all returned nil.
func (s *state) fire(event string, args ...lua.LValue) (lua.LValue, error) {
	for _, fn := range s.handlers[event] {
		v, err := s.call(fn, args...)
		if err != nil {
			return lua.LNil, fmt.Errorf("event %s: %w", event, err)
		}
		if v != lua.LNil {
			return v, nil
		}
	}
	return lua.LNil, nil
}

// where returns "file:line:" of the Lua code calling the current Go
// function.
func (s *state) where() string {
	w := s.L.Where(1)
	if w == "" {
		return s.p.file + ":"
	}
	return w
}

// fail reports a configuration error found by a kumo function. Without
// Options.Check it raises a Lua error (which names file and line); with
// Check it records the error and returns so that evaluation continues.
func (s *state) fail(err error) {
	if s.p.opts.Check {
		if s.primary {
			s.p.addError(fmt.Errorf("%s %w", s.where(), err))
		}
		return
	}
	s.L.RaiseError("%s", err.Error())
}

// table converts argument n, a parameter table, to Go.
func (s *state) table(n int) any {
	v := s.L.Get(n)
	g, err := toGo(v)
	if err != nil {
		s.L.ArgError(n, err.Error())
	}
	return g
}

func (s *state) warnIgnored(fn string, keys []string) {
	if len(keys) > 0 && s.primary {
		s.p.warn(fmt.Sprintf("%s %s: mtakit accepts and ignores %s", s.where(), fn, strings.Join(keys, ", ")))
	}
}

func (s *state) kumoModule() *lua.LTable {
	L := s.L
	kumo := L.NewTable()
	funcs := map[string]lua.LGFunction{
		"on":                            s.kumoOn,
		"define_spool":                  s.defineSpool,
		"configure_local_logs":          s.configureLocalLogs,
		"configure_bounce_classifier":   s.configureBounceClassifier,
		"start_esmtp_listener":          s.startESMTPListener,
		"start_http_listener":           s.startHTTPListener,
		"make_listener_domain":          s.makeListenerDomain,
		"make_queue_config":             s.makeQueueConfig,
		"make_egress_source":            s.makeEgressSource,
		"make_egress_pool":              s.makeEgressPool,
		"make_egress_path":              s.makeEgressPath,
		"reject":                        s.reject,
		"memoize":                       s.memoize,
		"toml_load":                     s.tomlLoad,
		"toml_parse":                    s.tomlParse,
		"toml_encode":                   s.tomlEncode,
		"toml_encode_pretty":            s.tomlEncode,
		"json_load":                     s.jsonLoad,
		"json_parse":                    s.jsonParse,
		"json_encode":                   s.jsonEncode,
		"json_encode_pretty":            s.jsonEncodePretty,
		"log_debug":                     s.logFunc("debug"),
		"log_info":                      s.logFunc("info"),
		"log_warn":                      s.logFunc("warn"),
		"log_error":                     s.logFunc("error"),
		"set_diagnostic_log_filter":     s.setDiagnosticLogFilter,
		"configure_redis_throttles":     s.unsupported("kumo.configure_redis_throttles", "shared throttles are configured in Go (shaping.Throttle)"),
		"configure_log_hook":            s.unsupported("kumo.configure_log_hook", "log hooks are not built yet"),
		"invoke_get_egress_path_config": s.invokeGetEgressPathConfig,
		"set_memory_hard_limit":         s.setMemory(memHard),
		"set_memory_soft_limit":         s.setMemory(memSoft),
		"set_memory_low_thresh":         s.setMemory(memLow),
		"get_memory_hard_limit":         s.getMemory(memHard),
		"get_memory_soft_limit":         s.getMemory(memSoft),
		"get_memory_low_thresh":         s.getMemory(memLow),
	}
	L.SetFuncs(kumo, funcs)

	serde := L.NewTable()
	L.SetFuncs(serde, map[string]lua.LGFunction{
		"toml_load": s.tomlLoad, "toml_parse": s.tomlParse, "toml_encode": s.tomlEncode, "toml_encode_pretty": s.tomlEncode,
		"json_load": s.jsonLoad, "json_parse": s.jsonParse, "json_encode": s.jsonEncode, "json_encode_pretty": s.jsonEncodePretty,
	})
	s.strict(serde, "kumo.serde")
	kumo.RawSetString("serde", serde)

	dns := L.NewTable()
	L.SetFuncs(dns, map[string]lua.LGFunction{"configure_resolver": s.configureResolver})
	s.strict(dns, "kumo.dns")
	kumo.RawSetString("dns", dns)

	dkimT := L.NewTable()
	L.SetFuncs(dkimT, map[string]lua.LGFunction{
		"rsa_sha256_signer": s.dkimSigner("kumo.dkim.rsa_sha256_signer", "rsa"),
		"ed25519_signer":    s.dkimSigner("kumo.dkim.ed25519_signer", "ed25519"),
	})
	s.strict(dkimT, "kumo.dkim")
	kumo.RawSetString("dkim", dkimT)
	s.strict(kumo, "kumo")
	return kumo
}

// strict makes reading an unknown field of a module table an error that
// names the field and the line.
func (s *state) strict(t *lua.LTable, name string) {
	mt := s.L.NewTable()
	mt.RawSetString("__index", s.L.NewFunction(func(L *lua.LState) int {
		key := L.Get(2)
		var known []string
		t.ForEach(func(k, _ lua.LValue) {
			if ks, ok := k.(lua.LString); ok {
				known = append(known, string(ks))
			}
		})
		sort.Strings(known)
		L.RaiseError("%s.%s is not provided by mtakit (known: %s)", name, key.String(), strings.Join(known, ", "))
		return 0
	}))
	s.L.SetMetatable(t, mt)
}

func (s *state) unsupported(name, why string) lua.LGFunction {
	return func(L *lua.LState) int {
		s.fail(fmt.Errorf("%s is not supported by mtakit: %s", name, why))
		return 0
	}
}

func (s *state) kumoOn(L *lua.LState) int {
	name := L.CheckString(1)
	fn := L.CheckFunction(2)
	if !multiEvents[name] && len(s.handlers[name]) > 0 {
		L.RaiseError("kumo.on: event %q already has a handler; only %s may have several", name, strings.Join(sortedKeys(multiEvents), ", "))
	}
	if !firedEvents[name] && !strings.HasPrefix(name, "make.") && s.primary {
		s.p.warn(fmt.Sprintf("%s kumo.on: mtakit does not fire the event %q; its handler never runs", s.where(), name))
	}
	s.handlers[name] = append(s.handlers[name], fn)
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *state) logFunc(level string) lua.LGFunction {
	return func(L *lua.LState) int {
		parts := make([]string, 0, L.GetTop())
		for i := 1; i <= L.GetTop(); i++ {
			parts = append(parts, L.ToStringMeta(L.Get(i)).String())
		}
		msg := strings.Join(parts, " ")
		where := strings.TrimSuffix(s.where(), ":")
		switch level {
		case "debug":
			s.p.log.Debug(msg, "lua", where)
		case "info":
			s.p.log.Info(msg, "lua", where)
		case "warn":
			s.p.log.Warn(msg, "lua", where)
		default:
			s.p.log.Error(msg, "lua", where)
		}
		return 0
	}
}

func (s *state) setDiagnosticLogFilter(L *lua.LState) int {
	L.CheckString(1)
	s.warnIgnored("kumo.set_diagnostic_log_filter", []string{"the filter (use the -log-level flag or slog)"})
	return 0
}

// rejectError is raised by kumo.reject.
type rejectError struct {
	code int
	text string
}

func (e *rejectError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

func (s *state) reject(L *lua.LState) int {
	code := L.CheckInt(1)
	text := L.OptString(2, "")
	if code < 200 || code > 599 {
		L.ArgError(1, fmt.Sprintf("kumo.reject: code %d is not an SMTP reply code", code))
	}
	ud := L.NewUserData()
	ud.Value = &rejectError{code: code, text: text}
	L.Error(ud, 0)
	return 0
}

// memoFunc is a function wrapped by kumo.memoize.
type memoFunc struct {
	cache ttlCache[lua.LValue]
}

// memoize implements kumo.memoize(fn, {name, ttl, capacity}): results are
// cached per argument tuple (converted to text) in this state.
func (s *state) memoize(L *lua.LState) int {
	fn := L.CheckFunction(1)
	f := newFields("kumo.memoize", s.table(2))
	var name string
	ttl := defaultTTL
	var capacity int
	var epoch bool
	f.str("name", &name)
	f.duration("ttl", &ttl)
	f.integer("capacity", &capacity)
	f.boolean("invalidate_with_epoch", &epoch)
	f.ignore("allow_stale_reads", "retry_on_populate_timeout", "populate_timeout")
	if err := f.done(); err != nil {
		s.fail(err)
	}
	m := &memoFunc{}
	s.p.memos.add(m)
	L.Push(L.NewFunction(func(L *lua.LState) int {
		var key strings.Builder
		args := make([]lua.LValue, L.GetTop())
		for i := range args {
			args[i] = L.Get(i + 1)
			g, err := toGo(args[i])
			if err != nil {
				L.RaiseError("kumo.memoize(%s): argument %d: %v", name, i+1, err)
			}
			fmt.Fprintf(&key, "%#v\x00", g)
		}
		now := nowFunc()
		if v, ok := m.cache.get(key.String(), now); ok {
			L.Push(v)
			return 1
		}
		L.Push(fn)
		for _, a := range args {
			L.Push(a)
		}
		L.Call(len(args), 1)
		v := L.Get(-1)
		m.cache.put(key.String(), v, ttl, now)
		return 1
	}))
	return 1
}
