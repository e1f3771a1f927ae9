package egress

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestDNSCacheLRUAndExpiry(t *testing.T) {
	c := newDNSCache(2)
	now := time.Unix(1000, 0)
	k := func(n string) cacheKey { return cacheKey{name: n, qtype: 1} }
	put := func(n string, ttl time.Duration) {
		c.put(&cacheEntry{key: k(n), set: &rrset{name: n}, expires: now.Add(ttl)})
	}
	put("a.", time.Minute)
	put("b.", time.Minute)
	if _, ok := c.get(k("a."), now); !ok { // a is now most recent
		t.Fatal("a missing")
	}
	put("c.", time.Minute) // evicts b
	if _, ok := c.get(k("b."), now); ok {
		t.Error("b not evicted")
	}
	if _, ok := c.get(k("a."), now); !ok {
		t.Error("a evicted")
	}
	if c.len() != 2 {
		t.Errorf("len %d", c.len())
	}
	put("a.", time.Second) // replace
	if _, ok := c.get(k("a."), now.Add(time.Second)); ok {
		t.Error("expired entry returned")
	}
	if c.len() != 1 {
		t.Errorf("expired entry not dropped: len %d", c.len())
	}
}

func TestFlightGroupCancelsWhenAllLeave(t *testing.T) {
	var g flightGroup
	k := cacheKey{name: "x.", qtype: 1}
	var stored atomic.Int32
	started := make(chan struct{})
	fn := func(ctx context.Context) (*rrset, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	store := func(*rrset, error) { stored.Add(1) }
	f1 := g.join(context.Background(), k, fn, store)
	f2 := g.join(context.Background(), k, fn, store)
	if f1 != f2 {
		t.Fatal("second join started a new flight")
	}
	<-started
	g.leave(k, f1)
	select {
	case <-f1.done:
		t.Fatal("flight cancelled while a waiter remains")
	case <-time.After(20 * time.Millisecond):
	}
	g.leave(k, f2)
	select {
	case <-f1.done:
	case <-time.After(5 * time.Second):
		t.Fatal("flight not cancelled after all waiters left")
	}
	if !errors.Is(f1.err, context.Canceled) || stored.Load() != 0 {
		t.Errorf("err %v, stored %d", f1.err, stored.Load())
	}
	// A new join after abandonment starts afresh.
	f3 := g.join(context.Background(), k, func(context.Context) (*rrset, error) { return &rrset{}, nil }, store)
	<-f3.done
	if f3 == f1 || f3.err != nil || stored.Load() != 1 {
		t.Errorf("fresh flight: same=%v err=%v stored=%d", f3 == f1, f3.err, stored.Load())
	}
}
