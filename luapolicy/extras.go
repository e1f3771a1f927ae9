package luapolicy

import (
	"fmt"
	"os"
	"sort"
	"strings"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/listener"
)

// preloadExtras makes require 'policy-extras.NAME' work. The helpers are
// Go: each reads its data files with the Go package that owns the format
// and hands Lua a handler backed by that package.
func (s *state) preloadExtras() {
	mods := map[string]map[string]lua.LGFunction{
		"policy_utils": {
			"merge_into":             s.utilMergeInto,
			"table_keys":             s.utilTableKeys,
			"table_contains":         s.utilTableContains,
			"starts_with":            s.utilStartsWith,
			"ends_with":              s.utilEndsWith,
			"load_json_or_toml_file": s.utilLoadFile,
		},
		"listener_domains": {"setup": s.listenerDomainsSetup},
		"dkim_sign":        {"setup": s.dkimSignSetup},
		"log_hooks": {
			"new":                  s.logHooksNew("new"),
			"new_json":             s.logHooksNewJSON,
			"new_disposition_hook": s.logHooksNew("new_disposition_hook"),
		},
		"sources": {"setup": s.sourcesSetup},
		"queue": {
			"setup":              s.queueSetup,
			"setup_with_options": s.queueSetupWithOptions,
		},
		"shaping": {
			"setup":                 s.shapingSetup,
			"setup_with_automation": s.shapingSetupWithAutomation,
		},
	}
	for name, funcs := range mods {
		full := "policy-extras." + name
		s.L.PreloadModule(full, func(L *lua.LState) int {
			t := L.NewTable()
			L.SetFuncs(t, funcs)
			s.strict(t, full)
			L.Push(t)
			return 1
		})
	}
}

// once makes a helper's setup fail when called a second time, as
// KumoMTA's helpers do.
func (s *state) once(L *lua.LState, helper string) {
	self, ok := L.Get(1).(*lua.LTable)
	if !ok {
		L.RaiseError("%s:setup must be called with ':' (%s:setup{...})", helper, helper)
	}
	if self.RawGetString("__configured") != lua.LNil {
		L.RaiseError("%s has already been configured", helper)
	}
	self.RawSetString("__configured", lua.LTrue)
}

// fileList reads the list of data file names passed to a helper's setup.
func (s *state) fileList(L *lua.LState, n int, helper string) []string {
	g, err := toGo(L.Get(n))
	if err != nil {
		L.ArgError(n, err.Error())
	}
	list, err := stringList(g)
	if err != nil {
		L.RaiseError("%s:setup: expected a list of file names: %v (mtakit does not accept inline data tables here)", helper, err)
	}
	for i, f := range list {
		list[i] = s.p.resolvePath(f)
	}
	s.p.track(list...)
	return list
}

// --- policy_utils ---

func (s *state) utilMergeInto(L *lua.LState) int {
	src, dst := L.Get(1), L.CheckTable(2)
	if t, ok := src.(*lua.LTable); ok {
		t.ForEach(func(k, v lua.LValue) { dst.RawSet(k, v) })
	}
	return 0
}

func (s *state) utilTableKeys(L *lua.LState) int {
	out := L.NewTable()
	L.CheckTable(1).ForEach(func(k, _ lua.LValue) { out.Append(k) })
	L.Push(out)
	return 1
}

func (s *state) utilTableContains(L *lua.LState) int {
	t, want := L.CheckTable(1), L.Get(2)
	found := false
	t.ForEach(func(_, v lua.LValue) { found = found || L.Equal(v, want) })
	L.Push(lua.LBool(found))
	return 1
}

func (s *state) utilStartsWith(L *lua.LState) int {
	L.Push(lua.LBool(strings.HasPrefix(L.CheckString(1), L.CheckString(2))))
	return 1
}

func (s *state) utilEndsWith(L *lua.LState) int {
	L.Push(lua.LBool(strings.HasSuffix(L.CheckString(1), L.CheckString(2))))
	return 1
}

func (s *state) utilLoadFile(L *lua.LState) int {
	name := s.p.resolvePath(L.CheckString(1))
	s.p.track(name)
	v, err := readData(name)
	if err != nil {
		L.RaiseError("%v", err)
	}
	L.Push(toLua(L, v))
	return 1
}

// --- listener_domains ---

// domainTable holds listener_domains.toml data: per listener ("*" for
// any) a map of domain patterns.
type domainTable map[string]map[string]*listener.ListenerDomain

func (t domainTable) lookup(listenerAddr, domain string) *listener.ListenerDomain {
	if d := matchDomain(t[listenerAddr], domain); d != nil && listenerAddr != "*" {
		return d
	}
	if d := matchDomain(t["*"], domain); d != nil {
		return d
	}
	return t["*"]["*"]
}

// matchDomain finds domain in m: exact name, then the longest wildcard
// "*.suffix"; never the catch-all "*".
func matchDomain(m map[string]*listener.ListenerDomain, domain string) *listener.ListenerDomain {
	if m == nil {
		return nil
	}
	if d, ok := m[domain]; ok {
		return d
	}
	for rest := domain; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return nil
		}
		rest = rest[i+1:]
		if d, ok := m["*."+rest]; ok {
			return d
		}
	}
}

func loadListenerDomains(files []string, warn func(string)) (domainTable, error) {
	t := domainTable{}
	var errs []string
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		v, err := readData(file)
		if err != nil {
			return nil, err
		}
		doc, _ := v.(map[string]any)
		add := func(listenerAddr, domain string, body any, header string) {
			f := newFields(fmt.Sprintf("%s:%d: [%s]", file, findHeaderLine(string(text), header, domain), header), body)
			d := decodeListenerDomain(f)
			// Authenticated clients whose authz id is listed may relay
			// for the domain (the listener checks it per session).
			f.strings("relay_from_authz", &d.RelayFromAuthz)
			if err := f.done(); err != nil {
				errs = append(errs, err.Error())
				return
			}
			if t[listenerAddr] == nil {
				t[listenerAddr] = map[string]*listener.ListenerDomain{}
			}
			t[listenerAddr][strings.ToLower(domain)] = d
		}
		for _, key := range sortedKeys(doc) {
			if key == "listener" {
				byListener, ok := doc[key].(map[string]any)
				if !ok {
					errs = append(errs, fmt.Sprintf("%s: [listener] must be a table of \"IP:PORT\" tables", file))
					continue
				}
				for _, l := range sortedKeys(byListener) {
					domains, ok := byListener[l].(map[string]any)
					if !ok {
						errs = append(errs, fmt.Sprintf("%s: [listener.%q] must be a table of domains", file, l))
						continue
					}
					for _, d := range sortedKeys(domains) {
						add(l, d, domains[d], fmt.Sprintf("listener.%q.%q", l, d))
					}
				}
				continue
			}
			add("*", key, doc[key], fmt.Sprintf("%q", key))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return t, nil
}

// findHeaderLine returns the line of the TOML table header that defines
// the table for key (its last part), or 0.
func findHeaderLine(text, header, last string) int {
	for i, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "[") {
			continue
		}
		if strings.Contains(l, `"`+last+`"]`) || strings.Contains(l, `'`+last+`']`) || strings.Contains(l, "."+last+"]") || l == "["+last+"]" {
			return i + 1
		}
	}
	return 0
}

func (s *state) listenerDomainsSetup(L *lua.LState) int {
	s.once(L, "policy-extras.listener_domains")
	files := s.fileList(L, 2, "listener_domains")
	v, err := s.p.files.load("listener_domains\x00"+strings.Join(files, "\x00"), func() (any, error) {
		return loadListenerDomains(files, func(msg string) {
			if s.primary {
				s.p.warn(msg)
			}
		})
	})
	var table domainTable
	if err != nil {
		s.fail(fmt.Errorf("policy-extras.listener_domains: %w", err))
		table = domainTable{}
	} else {
		table = v.(domainTable)
	}
	fn := L.NewFunction(func(L *lua.LState) int {
		domain := strings.ToLower(L.CheckString(1))
		listenerAddr := L.OptString(2, "*")
		d := table.lookup(listenerAddr, domain)
		if d == nil {
			L.Push(lua.LNil)
			return 1
		}
		L.Push(toLua(L, d))
		return 1
	})
	if s.helperFns == nil {
		s.helperFns = map[*lua.LFunction]string{}
	}
	s.helperFns[fn] = "get_listener_domain"
	s.listenerTable = table
	L.Push(fn)
	return 1
}

// --- dkim_sign ---

func (s *state) dkimSignSetup(L *lua.LState) int {
	s.once(L, "policy-extras.dkim_sign")
	files := s.fileList(L, 2, "dkim_sign")
	v, err := s.p.files.load("dkim_sign\x00"+strings.Join(files, "\x00"), func() (any, error) {
		d, err := dkim.Load(dkim.LoadOptions{KeyDir: s.p.opts.DKIMKeyDir}, files...)
		if err != nil {
			return nil, err
		}
		if s.p.opts.Check {
			if err := d.Check(); err != nil {
				return nil, err
			}
		}
		return d, nil
	})
	var data *dkim.Data
	if err != nil {
		s.fail(fmt.Errorf("policy-extras.dkim_sign: %w", err))
	} else {
		data = v.(*dkim.Data)
		if s.primary {
			for _, w := range data.Warnings() {
				s.p.warn("policy-extras.dkim_sign: " + w)
			}
		}
	}
	L.Push(L.NewFunction(func(L *lua.LState) int {
		m := checkMessage(L)
		if data == nil {
			L.RaiseError("policy-extras.dkim_sign: not configured (its data files failed to load)")
		}
		sig, err := data.Sign(m.Data())
		if err != nil {
			raiseSignError(L, err)
		}
		m.PrependRaw(sig)
		return 0
	}))
	return 1
}

// --- log_hooks ---

func (s *state) logHooksNew(fn string) lua.LGFunction {
	return func(L *lua.LState) int {
		name := "?"
		if t, ok := L.Get(2).(*lua.LTable); ok {
			name = t.RawGetString("name").String()
		}
		if s.primary {
			s.p.warn(fmt.Sprintf("%s policy-extras.log_hooks:%s: log hooks are not supported by mtakit yet; hook %q receives no records", s.where(), fn, name))
		}
		return 0
	}
}
