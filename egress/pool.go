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

// WeightedPool is a Pool that picks sources by smooth weighted round
// robin: over any window of sum(weights) picks, each source is chosen
// weight times, interleaved rather than in runs (a source of weight 2 and
// one of weight 1 give A B A, A B A, ...).
type WeightedPool struct {
	name string
	mu   sync.Mutex
	srcs []WeightedSource
	cur  []int
	sum  int
}

// NewPool returns a weighted pool. Entries with a weight of 0 count as 1,
// as in KumoMTA; a pool without entries is valid and yields no source
// (KumoMTA treats such a pool as always suspended).
func NewPool(name string, entries ...WeightedSource) *WeightedPool {
	p := &WeightedPool{name: name, srcs: entries, cur: make([]int, len(entries))}
	for i := range p.srcs {
		if p.srcs[i].Weight <= 0 {
			p.srcs[i].Weight = 1
		}
		p.sum += p.srcs[i].Weight
	}
	return p
}

// Name implements Pool.
func (p *WeightedPool) Name() string { return p.name }

// Next implements Pool; nil when the pool is empty.
func (p *WeightedPool) Next() EgressSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.srcs) == 0 {
		return nil
	}
	best := 0
	for i := range p.srcs {
		p.cur[i] += p.srcs[i].Weight
		if p.cur[i] > p.cur[best] {
			best = i
		}
	}
	p.cur[best] -= p.sum
	return p.srcs[best].Source
}

// String describes the pool for logs.
func (p *WeightedPool) String() string {
	return fmt.Sprintf("pool %s (%d sources)", p.name, len(p.srcs))
}
