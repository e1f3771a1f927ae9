package redisthrottle

import (
	"github.com/mtakit/mtakit/internal/redistest"

	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mtakit/mtakit/shaping"
)

func startRedis(t *testing.T) *redistest.Server { return redistest.Start(t) }

func newThrottle(t *testing.T, addr string, opts Options) *Throttle {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	opts.Client = c
	th := New(opts)
	t.Cleanup(func() { th.Close(); c.Close() })
	return th
}

// hammer calls Allow on th for d, sleeping as told, and counts the
// events allowed.
func hammer(th shaping.Throttle, key string, spec shaping.ThrottleSpec, d time.Duration, allowed *atomic.Int64) {
	ctx := context.Background()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if wait := th.Allow(ctx, key, spec, 1); wait > 0 {
			time.Sleep(min(wait, 2*time.Millisecond))
			continue
		}
		allowed.Add(1)
	}
}

// Two throttles on one Redis (two mtakit processes) together stay within
// one message rate: at most burst + rate * time (+10%); at least half of
// it, since a loaded machine may run the callers late.
func TestSharedRate(t *testing.T) {
	rs := startRedis(t)
	a := newThrottle(t, rs.Addr(), Options{})
	b := newThrottle(t, rs.Addr(), Options{})
	spec, err := shaping.ParseThrottle("50/s,max_burst=5")
	if err != nil {
		t.Fatal(err)
	}
	const d = 2 * time.Second
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for _, th := range []*Throttle{a, a, b, b} {
		wg.Add(1)
		go func() { defer wg.Done(); hammer(th, "message-rate:ip-1->site", spec, d, &allowed) }()
	}
	wg.Wait()
	want := 5 + 50*d.Seconds()
	got := float64(allowed.Load())
	t.Logf("allowed %v in %v across two throttles, want %v", got, d, want)
	if got < want*0.5 || got > want*1.1 {
		t.Errorf("allowed %v, want at most %v (+10%%) and at least half", got, want)
	}
	if a.Degraded() || b.Degraded() {
		t.Error("degraded")
	}
}

// Two throttles share one connection limit; a released slot is taken by
// the other node.
func TestSharedConnectionLimit(t *testing.T) {
	rs := startRedis(t)
	a := newThrottle(t, rs.Addr(), Options{})
	b := newThrottle(t, rs.Addr(), Options{})
	ctx := context.Background()
	limit := shaping.LimitSpec{Limit: 3}
	key := shaping.PathKey(shaping.KeyConnections, "ip-1", "site")
	var held []shaping.Lease
	for i := range 6 {
		th := a
		if i%2 == 1 {
			th = b
		}
		if l, _ := th.Acquire(ctx, key, limit); l != nil {
			held = append(held, l)
		}
	}
	if len(held) != 3 {
		t.Fatalf("held %d slots, want 3", len(held))
	}
	l, wait := b.Acquire(ctx, key, limit)
	if l != nil || wait <= 0 {
		t.Fatalf("fourth slot: %v %v", l, wait)
	}
	held[0].Release() // a's
	held[0].Release() // twice: no effect
	if l, _ := b.Acquire(ctx, key, limit); l == nil {
		t.Fatal("released slot not available to the other node")
	}
	if l, _ := a.Acquire(ctx, key, limit); l != nil {
		t.Fatal("limit exceeded after release")
	}
}

// Leases outlive LeaseTTL while their holder renews them.
func TestLeaseRenewal(t *testing.T) {
	rs := startRedis(t)
	a := newThrottle(t, rs.Addr(), Options{LeaseTTL: 300 * time.Millisecond})
	b := newThrottle(t, rs.Addr(), Options{LeaseTTL: 300 * time.Millisecond})
	ctx := context.Background()
	limit := shaping.LimitSpec{Limit: 1}
	l, _ := a.Acquire(ctx, "k", limit)
	if l == nil {
		t.Fatal("no slot")
	}
	time.Sleep(time.Second)
	if l2, _ := b.Acquire(ctx, "k", limit); l2 != nil {
		t.Fatal("renewed lease was lost")
	}
	l.Release()
	if l2, _ := b.Acquire(ctx, "k", limit); l2 == nil {
		t.Fatal("released lease still held")
	}
}

// The helper process of TestKilledHolderSlotsComeBack: it takes slots and
// holds them (renewing) until killed.
func TestHelperHolder(t *testing.T) {
	addr := os.Getenv("REDISTHROTTLE_HOLDER_ADDR")
	if addr == "" {
		t.Skip("helper process only")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	th := New(Options{Client: c, LeaseTTL: time.Second})
	n, _ := strconv.Atoi(os.Getenv("REDISTHROTTLE_HOLDER_SLOTS"))
	for range n {
		if l, _ := th.Acquire(context.Background(), "conn:killed", shaping.LimitSpec{Limit: n}); l == nil {
			fmt.Println("failed")
			os.Exit(1)
		}
	}
	fmt.Println("held")
	select {}
}

// A node killed while holding slots (no Release) gives them back after
// the lease TTL.
func TestKilledHolderSlotsComeBack(t *testing.T) {
	rs := startRedis(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "REDISTHROTTLE_HOLDER_ADDR="+rs.Addr(), "REDISTHROTTLE_HOLDER_SLOTS=3")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-waited })
	lines := bufio.NewScanner(stdout)
	ok := false
	for lines.Scan() {
		if strings.TrimSpace(lines.Text()) == "held" {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatal("holder did not take its slots")
	}
	go func() {
		for lines.Scan() {
		}
	}()

	me := newThrottle(t, rs.Addr(), Options{LeaseTTL: time.Second})
	ctx := context.Background()
	limit := shaping.LimitSpec{Limit: 3}
	// Alive, the holder keeps its slots past the TTL.
	time.Sleep(1500 * time.Millisecond)
	if l, _ := me.Acquire(ctx, "conn:killed", limit); l != nil {
		t.Fatal("got a slot while the holder is alive")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-waited
	killed := time.Now()
	var got []shaping.Lease
	for len(got) < 3 && time.Since(killed) < 5*time.Second {
		if l, wait := me.Acquire(ctx, "conn:killed", limit); l != nil {
			got = append(got, l)
		} else {
			time.Sleep(min(wait, 100*time.Millisecond))
		}
	}
	if len(got) != 3 {
		t.Fatalf("got %d of the killed holder's 3 slots back within 5s", len(got))
	}
	t.Logf("slots back %v after the kill (lease TTL 1s)", time.Since(killed).Round(10*time.Millisecond))
	if l, _ := me.Acquire(ctx, "conn:killed", limit); l != nil {
		t.Fatal("limit exceeded")
	}
}

// With Redis stopped mid-run, calls answer promptly from local limits,
// with a warning logged, and Redis is used again once back.
func TestRedisDownFallsBackToLocal(t *testing.T) {
	rs := startRedis(t)
	var logBuf syncBuffer
	th := newThrottle(t, rs.Addr(), Options{
		Logger:     slog.New(slog.NewTextHandler(&logBuf, nil)),
		RetryAfter: 200 * time.Millisecond,
	})
	ctx := context.Background()
	limit := shaping.LimitSpec{Limit: 2}
	held, _ := th.Acquire(ctx, "conn", limit) // one slot from Redis
	if held == nil {
		t.Fatal("no slot")
	}
	rs.Stop()

	start := time.Now()
	// The local limit counts the Redis lease still held: one more slot.
	l1, _ := th.Acquire(ctx, "conn", limit)
	l2, _ := th.Acquire(ctx, "conn", limit)
	if l1 == nil || l2 != nil {
		t.Errorf("local slots: %v %v, want one more", l1, l2)
	}
	spec, _ := shaping.ParseThrottle("10/s")
	n := 0
	for range 50 {
		if th.Allow(ctx, "rate", spec, 1) == 0 {
			n++
		}
	}
	if n != 10 {
		t.Errorf("local rate allowed %d of 50 at once, want the burst of 10", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("calls with Redis down took %v", d)
	}
	if !th.Degraded() {
		t.Error("not degraded")
	}
	if !strings.Contains(logBuf.String(), "using local limits") {
		t.Errorf("no warning logged: %s", logBuf.String())
	}
	held.Release()
	l1.Release()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Specs marked local: never touch Redis.
func TestLocalSpecs(t *testing.T) {
	// An address where nothing listens: a Redis call would fail and log.
	var logBuf syncBuffer
	th := newThrottle(t, "127.0.0.1:1", Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	ctx := context.Background()
	if l, _ := th.Acquire(ctx, "k", shaping.LimitSpec{Limit: 1, Local: true}); l == nil {
		t.Fatal("no local slot")
	}
	spec, _ := shaping.ParseThrottle("local:5/s")
	if th.Allow(ctx, "r", spec, 1) != 0 {
		t.Fatal("local rate refused")
	}
	if logBuf.String() != "" || th.Degraded() {
		t.Errorf("Redis was used: %s", logBuf.String())
	}
}
