package egress

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// cacheKey identifies one question.
type cacheKey struct {
	name  string // canonical: lower case, fully qualified
	qtype uint16
}

// cacheEntry is a cached answer or cached failure.
type cacheEntry struct {
	key     cacheKey
	set     *rrset
	err     error
	expires time.Time
}

// dnsCache is a size-bounded LRU map of answers with per-entry expiry.
type dnsCache struct {
	mu    sync.Mutex
	max   int
	items map[cacheKey]*list.Element // values are *cacheEntry
	order list.List                  // front = most recently used
}

func newDNSCache(max int) *dnsCache {
	return &dnsCache{max: max, items: make(map[cacheKey]*list.Element)}
}

// get returns the unexpired entry for k.
func (c *dnsCache) get(k cacheKey, now time.Time) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, k)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e, true
}

// put stores e, evicting the least recently used entries beyond max.
func (c *dnsCache) put(e *cacheEntry) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		el.Value = e
		c.order.MoveToFront(el)
		return
	}
	c.items[e.key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

// len returns the number of entries, expired or not.
func (c *dnsCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// flight is one in-progress lookup shared by every caller asking the same
// question at the same time.
type flight struct {
	done    chan struct{}
	set     *rrset
	err     error
	waiters int
	cancel  context.CancelFunc
}

// flightGroup deduplicates concurrent identical lookups. Unlike a plain
// singleflight, each waiter can give up on its own context; the shared
// lookup is cancelled only when every waiter has given up.
type flightGroup struct {
	mu      sync.Mutex
	flights map[cacheKey]*flight
}

// join returns the flight for k, starting fn in a new goroutine if there is
// none. fn runs with a context that keeps ctx's values but not its
// cancellation; it is cancelled when all waiters leave. store is called
// with fn's result unless the flight was abandoned.
func (g *flightGroup) join(ctx context.Context, k cacheKey,
	fn func(context.Context) (*rrset, error), store func(*rrset, error)) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.flights[k]; ok {
		f.waiters++
		return f
	}
	if g.flights == nil {
		g.flights = make(map[cacheKey]*flight)
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{done: make(chan struct{}), waiters: 1, cancel: cancel}
	g.flights[k] = f
	go func() {
		defer cancel()
		set, err := fn(fctx)
		if fctx.Err() == nil {
			store(set, err)
		}
		g.mu.Lock()
		if g.flights[k] == f {
			delete(g.flights, k)
		}
		f.set, f.err = set, err
		g.mu.Unlock()
		close(f.done)
	}()
	return f
}

// leave records that one waiter of f gave up; the last one cancels it.
func (g *flightGroup) leave(k cacheKey, f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	f.cancel()
	if g.flights[k] == f {
		delete(g.flights, k)
	}
}
