package luapolicy

import (
	"fmt"
	"sync"
	"weak"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/mta"
)

// Memory limits and cache purging.
//
// kumo.set_memory_hard_limit, set_memory_soft_limit and
// set_memory_low_thresh record the limits of mta's memory monitor
// (mta.Options.MemoryHardLimit and friends, applied by ServerOptions);
// the get_ functions return what the policy set, else the default the
// monitor will use (nil when it cannot be determined), as KumoMTA's
// return the limit in force. The limits take effect when the server
// starts; a Live reload applies those the new policy sets.
//
// PurgeCache empties the policy's memo caches, which mta's memory monitor
// calls when memory runs short (Start registers it).

type memoryKind int

const (
	memHard memoryKind = iota
	memSoft
	memLow
)

var memoryFuncNames = [...]string{"hard_limit", "soft_limit", "low_thresh"}

func (k memoryKind) get(l mta.MemoryLimits) int64 {
	return [...]int64{l.Hard, l.Soft, l.LowThresh}[k]
}

func (k memoryKind) set(l *mta.MemoryLimits, v int64) {
	*[...]*int64{&l.Hard, &l.Soft, &l.LowThresh}[k] = v
}

// setMemory implements kumo.set_memory_<kind>(LIMIT): an integer number
// of bytes.
func (s *state) setMemory(k memoryKind) lua.LGFunction {
	name := "kumo.set_memory_" + memoryFuncNames[k]
	return func(L *lua.LState) int {
		n, ok := L.Get(1).(lua.LNumber)
		if !ok || n <= 0 || float64(n) != float64(int64(n)) {
			s.fail(fmt.Errorf("%s: want a positive integer number of bytes, got %s", name, L.Get(1).String()))
			return 0
		}
		s.p.mu.Lock()
		k.set(&s.p.memLimits, int64(n))
		s.p.mu.Unlock()
		return 0
	}
}

// getMemory implements kumo.get_memory_<kind>().
func (s *state) getMemory(k memoryKind) lua.LGFunction {
	return func(L *lua.LState) int {
		v := k.get(s.p.effectiveMemoryLimits())
		if v <= 0 {
			L.Push(lua.LNil)
		} else {
			L.Push(lua.LNumber(v))
		}
		return 1
	}
}

// MemoryLimits returns the limits set by kumo.set_memory_*; zero fields
// were not set.
func (p *Policy) MemoryLimits() mta.MemoryLimits {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.memLimits
}

// effectiveMemoryLimits is MemoryLimits with the monitor's defaults in
// the fields the policy did not set.
func (p *Policy) effectiveMemoryLimits() mta.MemoryLimits {
	return p.MemoryLimits().WithDefaults()
}

// applyMemoryLimits copies the limits the policy set into opts.
func (p *Policy) applyMemoryLimits(opts *mta.Options) {
	l := p.MemoryLimits()
	if l.Hard != 0 {
		opts.MemoryHardLimit = l.Hard
	}
	if l.Soft != 0 {
		opts.MemorySoftLimit = l.Soft
	}
	if l.LowThresh != 0 {
		opts.MemoryLowThresh = l.LowThresh
	}
}

// memoRegistry tracks the kumo.memoize caches of a policy's states
// without keeping them alive: a memoized function that Lua dropped is
// collected with its cache.
type memoRegistry struct {
	mu    sync.Mutex
	memos []weak.Pointer[memoFunc]
	live  int // entries alive at the last pruning
}

func (r *memoRegistry) add(m *memoFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.memos) >= 2*r.live+16 {
		kept := r.memos[:0]
		for _, w := range r.memos {
			if w.Value() != nil {
				kept = append(kept, w)
			}
		}
		clear(r.memos[len(kept):])
		r.memos = kept
		r.live = len(kept)
	}
	r.memos = append(r.memos, weak.Make(m))
}

func (r *memoRegistry) purge() int {
	r.mu.Lock()
	memos := append([]weak.Pointer[memoFunc](nil), r.memos...)
	r.mu.Unlock()
	n := 0
	for _, w := range memos {
		if m := w.Value(); m != nil {
			n += m.cache.purge()
		}
	}
	return n
}

func (c *ttlCache[V]) purge() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.m)
	c.m = nil
	return n
}

// PurgeCache empties the policy's caches: the memoized results of
// get_queue_config, get_egress_path_config, get_egress_source,
// get_egress_pool and get_listener_domain, the values built by
// kumo.make_* and kumo.dkim.*, every kumo.memoize cache, and the caches
// of the shaping engine and DNS resolver made by policy-extras helpers.
// Parsed data files are kept: they are configuration, rebuilt only by a
// reload. It returns the number of entries dropped.
func (p *Policy) PurgeCache() int {
	n := p.queueMemo.purge() + p.pathMemo.purge() + p.domainMemo.purge() +
		p.sourceMemo.purge() + p.poolMemo.purge() + p.signers.purge() + p.constructed.purge()
	n += p.memos.purge()
	engine := p.shapingEngine()
	p.mu.Lock()
	direct, res := p.directShaper, p.resolverObj
	p.mu.Unlock()
	if engine != nil {
		n += engine.PurgeCache()
	}
	if direct != nil && direct != engine {
		n += direct.PurgeCache()
	}
	if res != nil {
		n += res.PurgeCache()
	}
	return n
}

// PurgeCache is Policy.PurgeCache of the current policy.
func (l *Live) PurgeCache() int { return l.cur.Load().PurgeCache() }
