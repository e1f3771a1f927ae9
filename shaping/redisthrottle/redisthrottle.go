// Package redisthrottle implements shaping.Throttle on Redis, so that
// several mtakit processes sharing one Redis server respect one message
// rate and one connection limit per key (KumoMTA's shared throttles,
// kumo.configure_redis_throttles).
//
// Rates use the generic cell rate algorithm in a server-side Lua script,
// timed by the Redis server's clock (TIME), so the nodes' clocks do not
// matter. Connection slots are leases: members of a sorted set scored by
// their expiry. A holder renews its leases every LeaseTTL/3; a node that
// dies stops renewing, and its slots come back LeaseTTL after its last
// renewal.
//
// When Redis cannot be reached (or a call takes longer than OpTimeout),
// the Throttle logs a warning and falls back to local limits for
// RetryAfter, then tries Redis again: delivery never stalls on Redis.
// Local limits are per process: the rate spec as is, and the connection
// limit counting every slot this process holds under the key (leases
// taken from Redis included). A fleet on local limits can therefore send
// up to its number of nodes times a limit while Redis is away.
//
// Specs marked "local:" (ThrottleSpec.Local, LimitSpec.Local) never use
// Redis.
//
// ActionBus shares traffic shaping automation actions (shaping.Action)
// across the fleet on the same Redis server.
package redisthrottle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mtakit/mtakit/shaping"
)

// Defaults of Options.
const (
	DefaultPrefix     = "mtakit:throttle:"
	DefaultLeaseTTL   = 30 * time.Second
	DefaultOpTimeout  = 250 * time.Millisecond
	DefaultRetryAfter = 5 * time.Second
)

// Options configures a Throttle.
type Options struct {
	// Client is the Redis connection (required).
	Client redis.UniversalClient
	// Prefix starts every Redis key (DefaultPrefix when "").
	Prefix string
	// LeaseTTL is how long a connection slot stays taken without renewal
	// (DefaultLeaseTTL when 0): how long a dead node's slots stay lost.
	LeaseTTL time.Duration
	// OpTimeout bounds each Redis call (DefaultOpTimeout when 0).
	OpTimeout time.Duration
	// RetryAfter is how long to stay on local limits after Redis failed
	// before trying it again (DefaultRetryAfter when 0).
	RetryAfter time.Duration
	// Logger receives the fallback warnings; nil uses slog.Default().
	Logger *slog.Logger
}

// Throttle is a shaping.Throttle shared through Redis. Create it with
// New and stop it with Close.
type Throttle struct {
	opts  Options
	log   *slog.Logger
	local *shaping.LocalThrottle
	node  string

	mu        sync.Mutex
	downUntil time.Time
	down      bool
	held      map[string]int      // key -> slots held by this process
	leases    map[*lease]struct{} // Redis leases to renew
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ shaping.Throttle = (*Throttle)(nil)

// New returns a Throttle on opts.Client and starts renewing its leases.
func New(opts Options) *Throttle {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	t := &Throttle{
		opts:   opts,
		log:    opts.Logger,
		local:  shaping.NewLocalThrottle(),
		node:   randomID(),
		held:   map[string]int{},
		leases: map[*lease]struct{}{},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	go t.renewLoop()
	return t
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close stops renewing leases and releases those still held (best
// effort). Leases released after Close only update local counts.
func (t *Throttle) Close() error {
	t.closeOnce.Do(func() {
		close(t.stop)
		<-t.done
		t.mu.Lock()
		var ls []*lease
		for l := range t.leases {
			ls = append(ls, l)
		}
		t.mu.Unlock()
		for _, l := range ls {
			l.Release()
		}
	})
	return nil
}

// Degraded reports whether the Throttle is on local limits because Redis
// failed recently.
func (t *Throttle) Degraded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.down && time.Now().Before(t.downUntil)
}

// useRedis reports whether to try Redis now.
func (t *Throttle) useRedis() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.down || !time.Now().Before(t.downUntil)
}

// failed records a Redis failure and switches to local limits.
func (t *Throttle) failed(op string, err error) {
	t.mu.Lock()
	was := t.down
	t.down = true
	t.downUntil = time.Now().Add(t.opts.RetryAfter)
	t.mu.Unlock()
	if !was {
		t.log.Warn("shaping: Redis throttles unreachable; using local limits", "op", op, "err", err,
			"retry_after", t.opts.RetryAfter)
	}
}

func (t *Throttle) recovered() {
	t.mu.Lock()
	was := t.down
	t.down = false
	t.mu.Unlock()
	if was {
		t.log.Info("shaping: Redis throttles reachable again")
	}
}

// gcra is the generic cell rate algorithm. KEYS[1]: the key. ARGV: the
// emission interval and the burst tolerance (interval * burst), both in
// microseconds, and the quantity. Returns 0 when allowed (and charged),
// else the microseconds to wait.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * n
local allow_at = new_tat - tolerance
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
`)

// Allow implements shaping.Throttle.
func (t *Throttle) Allow(ctx context.Context, key string, spec shaping.ThrottleSpec, n int) time.Duration {
	if spec.Limit <= 0 || spec.Period <= 0 || n <= 0 {
		return 0
	}
	if n > spec.Burst() {
		return spec.Period
	}
	if spec.Local || !t.useRedis() {
		return t.local.Allow(ctx, key, spec, n)
	}
	interval := float64(spec.Period.Microseconds()) / float64(spec.Limit)
	tolerance := interval * float64(spec.Burst())
	rk := t.opts.Prefix + "rate:" + key + ":" + spec.String()
	cctx, cancel := context.WithTimeout(ctx, t.opts.OpTimeout)
	defer cancel()
	wait, err := gcra.Run(cctx, t.opts.Client, []string{rk},
		strconv.FormatFloat(interval, 'f', 3, 64), strconv.FormatFloat(tolerance, 'f', 3, 64), n).Int64()
	if err != nil {
		if ctx.Err() != nil {
			return t.local.Allow(ctx, key, spec, n)
		}
		t.failed("rate", err)
		return t.local.Allow(ctx, key, spec, n)
	}
	t.recovered()
	return time.Duration(wait) * time.Microsecond
}

// acquire takes a lease. KEYS[1]: the sorted set. ARGV: limit, TTL in
// milliseconds, lease id. Returns {1, 0} when taken, else {0, ms until the
// first lease expires}.
var acquire = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(first[2]) - now)}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return {1, 0}
`)

// renew extends leases still present (a lease released meanwhile stays
// released). KEYS: sorted sets; ARGV: TTL in milliseconds, then one lease
// id per key.
var renew = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', k, ttl * 2)
end
return #KEYS
`)

type lease struct {
	t    *Throttle
	key  string // throttle key
	zkey string // Redis key; "" for a local lease
	id   string
	once sync.Once
}

// Acquire implements shaping.Throttle.
func (t *Throttle) Acquire(ctx context.Context, key string, limit shaping.LimitSpec) (shaping.Lease, time.Duration) {
	if limit.Local {
		return t.local.Acquire(ctx, key, limit)
	}
	if t.useRedis() {
		l := &lease{t: t, key: key, zkey: t.opts.Prefix + "conn:" + key, id: t.node + ":" + randomID()}
		cctx, cancel := context.WithTimeout(ctx, t.opts.OpTimeout)
		res, err := acquire.Run(cctx, t.opts.Client, []string{l.zkey},
			limit.Limit, t.opts.LeaseTTL.Milliseconds(), l.id).Int64Slice()
		cancel()
		if err == nil && len(res) == 2 {
			t.recovered()
			if res[0] != 1 {
				return nil, time.Duration(res[1]) * time.Millisecond
			}
			t.mu.Lock()
			t.held[key]++
			t.leases[l] = struct{}{}
			t.mu.Unlock()
			return l, 0
		}
		if err == nil {
			err = errors.New("unexpected reply from the lease script")
		}
		if ctx.Err() == nil {
			t.failed("acquire", err)
		}
	}
	// Local limits: count every slot this process holds under key.
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.held[key] >= limit.Limit {
		return nil, 100 * time.Millisecond
	}
	t.held[key]++
	return &lease{t: t, key: key}, 0
}

// Release implements shaping.Lease.
func (l *lease) Release() {
	l.once.Do(func() {
		t := l.t
		t.mu.Lock()
		if t.held[l.key]--; t.held[l.key] <= 0 {
			delete(t.held, l.key)
		}
		delete(t.leases, l)
		t.mu.Unlock()
		if l.zkey == "" || !t.useRedis() {
			return // a Redis lease not removed now expires after LeaseTTL
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.OpTimeout)
		defer cancel()
		if err := t.opts.Client.ZRem(ctx, l.zkey, l.id).Err(); err != nil {
			t.failed("release", err)
		}
	})
}

func (t *Throttle) renewLoop() {
	defer close(t.done)
	tick := time.NewTicker(max(t.opts.LeaseTTL/3, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.renewAll()
		}
	}
}

func (t *Throttle) renewAll() {
	t.mu.Lock()
	keys := make([]string, 0, len(t.leases))
	args := []any{t.opts.LeaseTTL.Milliseconds()}
	for l := range t.leases {
		keys = append(keys, l.zkey)
		args = append(args, l.id)
	}
	t.mu.Unlock()
	if len(keys) == 0 || !t.useRedis() {
		return
	}
	// Keys in one cluster slot are not guaranteed; renew in batches of
	// one key per call on clusters, all at once otherwise.
	batch := len(keys)
	if _, ok := t.opts.Client.(*redis.ClusterClient); ok {
		batch = 1
	}
	for i := 0; i < len(keys); i += batch {
		j := min(i+batch, len(keys))
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.OpTimeout)
		err := renew.Run(ctx, t.opts.Client, keys[i:j], append([]any{args[0]}, args[i+1:j+1]...)...).Err()
		cancel()
		if err != nil {
			t.failed("renew", err)
			return
		}
	}
	t.recovered()
}
