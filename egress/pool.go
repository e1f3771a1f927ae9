package egress

import (
	"fmt"
	"sync"
)

// WeightedSource is a pool member: a source and its weight (KumoMTA's pool
// entry; weight defaults to 1).
type WeightedSource struct {
	Source EgressSource
	Weight int
}

// KeyedPool is a Pool that keeps a separate selection cursor per key, so
// that each scheduled queue (the key) spreads its own mail by weight.
// *WeightedPool implements it.
type KeyedPool interface {
	Pool
	// NextFor returns the next source for key; nil when the pool is
	// empty.
	NextFor(key string) EgressSource
}

// maxPoolCursors bounds the per-key cursors of a WeightedPool; beyond it
// an arbitrary cursor is dropped (its key starts afresh).
const maxPoolCursors = 1 << 16

// WeightedPool is a Pool that picks sources by smooth weighted round
// robin (nginx's algorithm): over any sum(weights) consecutive picks of
// one cursor, each source is chosen exactly weight times, interleaved
// rather than in runs (a source of weight 2 and one of weight 1 give
// A B A, A B A, ...).
//
// Next uses the pool's own cursor. NextFor keeps one cursor per key (a
// scheduled queue name), so that each queue's mail is spread by weight on
// its own: with one shared cursor two queues whose messages alternate
// could each land on a single source (weights 1:1, queue X always picking
// A and queue Y always B). A new key's cursor starts where the pool's own
// cursor is, and the pool's cursor then moves one step, so that many
// short-lived queues of one message each are also spread exactly by
// weight instead of all starting on the heaviest source.
//
// A pool is immutable apart from its cursors: to change its sources
// (a configuration reload), build a new pool and use it instead of the
// old one. Messages already assigned to a source keep it.
type WeightedPool struct {
	name    string
	srcs    []WeightedSource
	sum     int
	mu      sync.Mutex
	cur     []int
	cursors map[string]*Cursor
}

// NewPool returns a weighted pool. Entries with a weight of 0 or less
// count as 1 (the zero value means "unset"); a pool without entries is
// valid and yields no source (KumoMTA treats such a pool as always
// suspended). LoadSources drops entries whose file weight is 0, as
// KumoMTA does, before calling NewPool.
func NewPool(name string, entries ...WeightedSource) *WeightedPool {
	p := &WeightedPool{name: name, srcs: append([]WeightedSource(nil), entries...), cur: make([]int, len(entries))}
	for i := range p.srcs {
		if p.srcs[i].Weight <= 0 {
			p.srcs[i].Weight = 1
		}
		p.sum += p.srcs[i].Weight
	}
	return p
}

var _ KeyedPool = (*WeightedPool)(nil)

// Name implements Pool.
func (p *WeightedPool) Name() string { return p.name }

// Entries returns the pool's sources and their weights.
func (p *WeightedPool) Entries() []WeightedSource {
	return append([]WeightedSource(nil), p.srcs...)
}

// Next implements Pool with the pool's own cursor; nil when the pool is
// empty.
func (p *WeightedPool) Next() EgressSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.srcs) == 0 {
		return nil
	}
	return p.srcs[p.step(p.cur)].Source
}

// NextFor implements KeyedPool: the next source of key's cursor.
func (p *WeightedPool) NextFor(key string) EgressSource {
	if len(p.srcs) == 0 {
		return nil
	}
	p.mu.Lock()
	c := p.cursors[key]
	if c == nil {
		if p.cursors == nil {
			p.cursors = make(map[string]*Cursor)
		}
		if len(p.cursors) >= maxPoolCursors {
			for k := range p.cursors {
				delete(p.cursors, k)
				break
			}
		}
		c = p.newCursorLocked()
		p.cursors[key] = c
	}
	p.mu.Unlock()
	return c.Next()
}

// NewCursor returns an independent cursor over the pool, for a caller
// that keeps one per scheduled queue itself (instead of NextFor's map).
// It starts where the pool's own cursor is, which then moves one step.
func (p *WeightedPool) NewCursor() *Cursor {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newCursorLocked()
}

func (p *WeightedPool) newCursorLocked() *Cursor {
	c := &Cursor{p: p, cur: append([]int(nil), p.cur...)}
	if len(p.srcs) > 0 {
		p.step(p.cur)
	}
	return c
}

// step advances the smooth weighted round robin state cur and returns the
// index picked.
func (p *WeightedPool) step(cur []int) int {
	best := 0
	for i := range p.srcs {
		cur[i] += p.srcs[i].Weight
		if cur[i] > cur[best] {
			best = i
		}
	}
	cur[best] -= p.sum
	return best
}

// String describes the pool for logs.
func (p *WeightedPool) String() string {
	return fmt.Sprintf("pool %s (%d sources)", p.name, len(p.srcs))
}

// Cursor is one smooth weighted round robin position over a
// WeightedPool; safe for concurrent use.
type Cursor struct {
	p   *WeightedPool
	mu  sync.Mutex
	cur []int
}

// Next returns the cursor's next source; nil when the pool is empty.
func (c *Cursor) Next() EgressSource {
	if len(c.p.srcs) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.p.srcs[c.p.step(c.cur)].Source
}
