package shaping

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Throttle enforces the limits of egress paths: rates (max_message_rate,
// max_connection_rate, the additional_* throttles) and concurrency
// (connection_limit, additional_connection_limits), by key. The queue
// engine names the keys, e.g. with PathKey for a path's own limits and
// NamedKey for the additional limits shared by every path naming them.
//
// Neither method blocks on the limit: they answer at once with how long
// to wait, so the engine can schedule the path again instead of holding a
// goroutine. Implementations must be safe for concurrent use and must
// answer promptly even when a backing store is unreachable.
type Throttle interface {
	// Allow charges n events against spec under key. It returns 0 when
	// they are allowed now (and charged), otherwise how long to wait
	// before they would be allowed (nothing is charged). n larger than
	// the burst is never allowed; such a call returns spec.Period.
	Allow(ctx context.Context, key string, spec ThrottleSpec, n int) time.Duration

	// Acquire takes one of limit.Limit slots under key. When all are
	// taken it returns a nil Lease and a hint of how long to wait before
	// trying again. The slot is held until Lease.Release.
	Acquire(ctx context.Context, key string, limit LimitSpec) (Lease, time.Duration)
}

// Lease is a slot held under a connection limit.
type Lease interface {
	// Release gives the slot back. Calls after the first do nothing.
	Release()
}

// Kinds of path limits, for PathKey.
const (
	KeyConnections    = "connections"     // connection_limit
	KeyMessageRate    = "message-rate"    // max_message_rate
	KeyConnectionRate = "connection-rate" // max_connection_rate
)

// PathKey names the throttle key of one of a path's own limits; kind is
// one of the Key* constants. Paths are (source, site) as for KumoMTA's
// ready queues.
func PathKey(kind, source, site string) string {
	return kind + ":" + source + "->" + site
}

// NamedKey names the throttle key of a named additional limit
// (additional_connection_limits, additional_message_rate_throttles,
// additional_source_selection_rates entries), shared by every path that
// names it.
func NamedKey(kind, name string) string {
	return kind + ":named:" + name
}

// LocalThrottle is a Throttle for one process: token buckets
// (golang.org/x/time/rate) for rates and counters for connection slots.
// The zero value is not usable; call NewLocalThrottle.
type LocalThrottle struct {
	mu    sync.Mutex
	rates map[rateKey]*rate.Limiter
	slots map[string]int
	now   func() time.Time
}

type rateKey struct {
	key  string
	spec ThrottleSpec
}

// NewLocalThrottle returns an empty LocalThrottle.
func NewLocalThrottle() *LocalThrottle {
	return &LocalThrottle{rates: map[rateKey]*rate.Limiter{}, slots: map[string]int{}, now: time.Now}
}

// Allow implements Throttle. A key whose spec changes starts afresh.
func (l *LocalThrottle) Allow(_ context.Context, key string, spec ThrottleSpec, n int) time.Duration {
	if spec.Limit <= 0 || spec.Period <= 0 || n <= 0 {
		return 0
	}
	now := l.now()
	k := rateKey{key, spec}
	l.mu.Lock()
	lim := l.rates[k]
	if lim == nil {
		if len(l.rates) >= 100000 {
			l.pruneLocked(now)
		}
		lim = rate.NewLimiter(rate.Limit(spec.PerSecond()), spec.Burst())
		l.rates[k] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, n)
	if !r.OK() {
		return spec.Period
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// pruneLocked forgets limiters that are full again (idle keys).
func (l *LocalThrottle) pruneLocked(now time.Time) {
	for k, lim := range l.rates {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(l.rates, k)
		}
	}
}

// localRetry is the wait hint of a full LocalThrottle slot counter: the
// slots come back when connections close, which the counter cannot
// foresee.
const localRetry = 100 * time.Millisecond

// Acquire implements Throttle.
func (l *LocalThrottle) Acquire(_ context.Context, key string, limit LimitSpec) (Lease, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.slots[key] >= limit.Limit {
		return nil, localRetry
	}
	l.slots[key]++
	return &localLease{l: l, key: key}, 0
}

// Held returns how many slots are held under key.
func (l *LocalThrottle) Held(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slots[key]
}

type localLease struct {
	l    *LocalThrottle
	key  string
	once sync.Once
}

func (ll *localLease) Release() {
	ll.once.Do(func() {
		ll.l.mu.Lock()
		if ll.l.slots[ll.key]--; ll.l.slots[ll.key] <= 0 {
			delete(ll.l.slots, ll.key)
		}
		ll.l.mu.Unlock()
	})
}
