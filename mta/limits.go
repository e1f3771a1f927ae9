package mta

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

// pathLimits are the throttles of one ready queue, parsed from its path
// config: the keys and specs the queue's workers charge.
type pathLimits struct {
	conns    []connLimit        // connection_limit (unless local) and additional_connection_limits
	connRate []rateLimit        // max_connection_rate
	msgRates []rateLimit        // max_message_rate and additional_message_rate_throttles
	from     shaping.PathConfig // the config these were parsed from
}

type connLimit struct {
	key  string
	spec shaping.LimitSpec
}

type rateLimit struct {
	key  string
	spec shaping.ThrottleSpec
}

// limitsFor parses the limits of cfg for the path (source, site). Invalid
// specs are logged and skipped (the shaper validates its own; this guards
// configurations built in Go).
func (s *Server) limitsFor(old *pathLimits, source, site string, cfg shaping.PathConfig) *pathLimits {
	if old != nil && sameLimits(old.from, cfg) {
		return old
	}
	l := &pathLimits{from: cfg}
	// The path's own connection_limit is enforced in this process by the
	// ready queue's worker count; the throttle makes it fleet-wide.
	if !cfg.ConnectionLimitLocal && cfg.ConnectionLimit > 0 {
		l.conns = append(l.conns, connLimit{shaping.PathKey(shaping.KeyConnections, source, site), shaping.LimitSpec{Limit: cfg.ConnectionLimit}})
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.AdditionalConnectionLimits)) {
		// Sorted, so that every worker acquires in one order.
		l.conns = append(l.conns, connLimit{shaping.NamedKey(shaping.KeyConnections, name), cfg.AdditionalConnectionLimits[name]})
	}
	addRate := func(dst *[]rateLimit, key, spec, what string) {
		if spec == "" {
			return
		}
		t, err := shaping.ParseThrottle(spec)
		if err != nil {
			s.log.Warn("invalid throttle from the shaper; not enforced", "key", what, "spec", spec, "site", site, "err", err)
			return
		}
		*dst = append(*dst, rateLimit{key, t})
	}
	addRate(&l.connRate, shaping.PathKey(shaping.KeyConnectionRate, source, site), cfg.MaxConnectionRate, "max_connection_rate")
	addRate(&l.msgRates, shaping.PathKey(shaping.KeyMessageRate, source, site), cfg.MaxMessageRate, "max_message_rate")
	for _, name := range slices.Sorted(maps.Keys(cfg.AdditionalMessageRateThrottles)) {
		addRate(&l.msgRates, shaping.NamedKey(shaping.KeyMessageRate, name), cfg.AdditionalMessageRateThrottles[name], "additional_message_rate_throttles")
	}
	return l
}

func sameLimits(a, b shaping.PathConfig) bool {
	return a.ConnectionLimit == b.ConnectionLimit && a.ConnectionLimitLocal == b.ConnectionLimitLocal &&
		a.MaxConnectionRate == b.MaxConnectionRate && a.MaxMessageRate == b.MaxMessageRate &&
		maps.Equal(a.AdditionalConnectionLimits, b.AdditionalConnectionLimits) &&
		maps.Equal(a.AdditionalMessageRateThrottles, b.AdditionalMessageRateThrottles)
}

// throttleFor returns the throttle that enforces a spec: the server's
// (possibly fleet-wide) one, or the process-local one for "local:" specs.
func (s *Server) throttleFor(local bool) shaping.Throttle {
	if local {
		return s.localThrottle
	}
	return s.throttle
}

// errStopping ends a wait because the server is stopping.
var errStopping = errors.New("server is stopping")

// pause waits d, or until ctx ends or the server stops.
func (s *Server) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.stopping:
		return errStopping
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// clampWait keeps a throttle's wait hint sensible: long enough not to
// spin, short enough to notice a freed slot soon.
func clampWait(d time.Duration) time.Duration {
	return min(max(d, 5*time.Millisecond), time.Second)
}

// allowRates charges one event against each rate, waiting as the
// throttles say. It returns an error only when ctx ends or the server
// stops.
func (s *Server) allowRates(ctx context.Context, rates []rateLimit) error {
	for _, r := range rates {
		for {
			wait := s.throttleFor(r.spec.Local).Allow(ctx, r.key, r.spec, 1)
			if wait <= 0 {
				break
			}
			if err := s.pause(ctx, clampWait(wait)); err != nil {
				return err
			}
		}
	}
	return nil
}

// acquireConns takes a slot of every connection limit, waiting until all
// are free, and returns a function that releases them.
func (s *Server) acquireConns(ctx context.Context, limits []connLimit) (release func(), err error) {
	held := make([]shaping.Lease, 0, len(limits))
	release = func() {
		for _, l := range held {
			l.Release()
		}
		held = held[:0]
	}
	for i := 0; i < len(limits); {
		l := limits[i]
		lease, wait := s.throttleFor(l.spec.Local).Acquire(ctx, l.key, l.spec)
		if lease != nil {
			held = append(held, lease)
			i++
			continue
		}
		// Give back what we hold while waiting, so two paths sharing
		// named limits cannot hold each other's slots.
		release()
		i = 0
		if err := s.pause(ctx, clampWait(wait)); err != nil {
			return nil, err
		}
	}
	return release, nil
}
