package mta

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// The memory monitor.
//
// Like KumoMTA's, it samples the memory this process is charged for and
// compares it with three limits:
//
//   - the hard limit: the memory the process may use at all (the cgroup's
//     memory.max, else physical memory); it is the base of the other two
//     defaults.
//   - the soft limit (default 75 % of the hard limit): above it the server
//     sheds load. New SMTP connections get "421 4.3.2 <host> load
//     shedding. Try later" (KumoMTA's reply) and are closed, MAIL FROM in
//     sessions already open gets 451 4.3.2 (KumoMTA only checks at
//     connection time; long sessions of an injector would otherwise never
//     notice), Inject (unless Submission.Admitted) and the HTTP inject
//     API refuse (503 there), and
//     check-liveness answers 503. On crossing it the registered caches are
//     purged and the Go runtime returns free memory to the system
//     (debug.FreeOSMemory); while usage stays above, that is repeated at
//     most every purgeInterval, as KumoMTA debounces its purges.
//   - the low threshold (default 80 % of the soft limit): above it the
//     state is "low", logged and exported. KumoMTA's passive measure at
//     this level, releasing message bodies as they move between queues,
//     has no counterpart: mtakit keeps no body in memory once it is
//     spooled.
//
// Each change of state is logged once with slog, not per refused message.

// Defaults of the memory monitor.
const (
	// DefaultMemoryCheckInterval is Options.MemoryCheckInterval's default.
	// A sample reads /proc/self/statm (a few µs).
	DefaultMemoryCheckInterval = time.Second

	// purgeInterval bounds how often caches are purged while usage stays
	// over the soft limit (KumoMTA waits 30 s between purges).
	purgeInterval = 30 * time.Second
)

// MemoryState is the memory monitor's verdict.
type MemoryState int

const (
	// MemoryNormal: usage is below the low threshold.
	MemoryNormal MemoryState = iota
	// MemoryLow: usage is at or above the low threshold.
	MemoryLow
	// MemoryOverSoftLimit: usage is at or above the soft limit; the
	// server refuses new mail.
	MemoryOverSoftLimit
)

func (s MemoryState) String() string {
	switch s {
	case MemoryNormal:
		return "normal"
	case MemoryLow:
		return "low"
	case MemoryOverSoftLimit:
		return "over soft limit"
	}
	return "MemoryState(" + strconv.Itoa(int(s)) + ")"
}

// MemoryLimits are the memory monitor's thresholds in bytes. In
// Options and SetMemoryLimits, 0 selects the default: Hard the cgroup
// limit or physical memory, Soft 75 % of Hard, LowThresh 80 % of Soft.
// A negative Soft disables the monitor.
type MemoryLimits struct {
	Hard, Soft, LowThresh int64
}

// DefaultMemoryLimits returns the limits the monitor uses when none are
// set: Hard is the cgroup v2 memory.max of this process, else physical
// memory; all three are 0 when neither can be read.
func DefaultMemoryLimits() MemoryLimits {
	return MemoryLimits{}.WithDefaults()
}

// WithDefaults returns l with its zero fields (and a non-positive Hard)
// set to their defaults, computed from the fields set.
func (l MemoryLimits) WithDefaults() MemoryLimits {
	if l.Hard <= 0 {
		l.Hard = memoryLimit()
	}
	if l.Soft == 0 {
		l.Soft = l.Hard / 4 * 3
	}
	if l.LowThresh == 0 && l.Soft > 0 {
		l.LowThresh = l.Soft / 10 * 8
	}
	return l
}

// MemoryStatus is what the memory monitor last saw.
type MemoryStatus struct {
	// Usage is the last sample in bytes (see Server.MemoryStatus for
	// what is counted); 0 before the first or when disabled.
	Usage  int64
	Limits MemoryLimits
	State  MemoryState
	// Enabled is false when no soft limit applies (negative, or no
	// limit could be determined).
	Enabled bool
	// Sampled is when Usage was read.
	Sampled time.Time
	// OverLimit counts the times usage crossed the soft limit.
	OverLimit uint64
	// Refused counts the connections, transactions and injections
	// refused while over the soft limit.
	Refused uint64
	// Purged counts the cache entries dropped by purges.
	Purged uint64
}

// ErrLoadShedding is returned (by Inject, Live) while memory usage is over
// the soft limit. It is an *smtp.SMTPError, so SMTP and HTTP callers
// answer it as a temporary failure.
var ErrLoadShedding = &smtp.SMTPError{
	Code:         451,
	EnhancedCode: smtp.EnhancedCode{4, 3, 2},
	Message:      "load shedding, try again later",
}

// memoryMonitor holds the limits, the last sample and the cache registry.
type memoryMonitor struct {
	srv    *Server
	sample func() (int64, error)

	shedding atomic.Bool // over the soft limit: the hot path's question
	refused  atomic.Uint64

	mu        sync.Mutex // serializes checks and guards what follows
	limits    MemoryLimits
	status    MemoryStatus
	lastPurge time.Time
	caches    []namedCache
	sampleErr bool // a sampling failure was logged
}

type namedCache struct {
	name  string
	purge func() int
}

func newMemoryMonitor(s *Server, opts Options) *memoryMonitor {
	m := &memoryMonitor{srv: s, sample: memoryUsage}
	m.limits = MemoryLimits{Hard: opts.MemoryHardLimit, Soft: opts.MemorySoftLimit, LowThresh: opts.MemoryLowThresh}.WithDefaults()
	return m
}

func (m *memoryMonitor) enabled() bool { return m.limits.Soft > 0 }

// run samples every interval until stop is closed.
func (m *memoryMonitor) run(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			m.check()
		}
	}
}

// check takes a sample, updates the state and acts on a change.
func (m *memoryMonitor) check() MemoryStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Limits = m.limits
	m.status.Enabled = m.enabled()
	if !m.status.Enabled {
		if m.status.State == MemoryOverSoftLimit {
			m.srv.log.Warn("memory monitor disabled: accepting mail")
		}
		m.status.State, m.status.Usage = MemoryNormal, 0
		m.setShedding(false)
		return m.snapshot()
	}
	usage, err := m.sample()
	if err != nil {
		if !m.sampleErr {
			m.srv.log.Error("memory monitor cannot read memory usage; keeping the last state", "err", err)
			m.sampleErr = true
		}
		return m.snapshot()
	}
	m.sampleErr = false
	m.evaluate(usage)
	if m.status.State == MemoryOverSoftLimit && time.Since(m.lastPurge) >= purgeInterval {
		m.purge()
		// Purging may have brought usage under the limit: look again at
		// once rather than refusing mail for another interval.
		if usage, err := m.sample(); err == nil {
			m.evaluate(usage)
		}
	}
	return m.snapshot()
}

// evaluate records a sample and logs a change of state; m.mu is held.
func (m *memoryMonitor) evaluate(usage int64) {
	old := m.status.State
	st := MemoryNormal
	switch {
	case usage >= m.limits.Soft:
		st = MemoryOverSoftLimit
	case m.limits.LowThresh > 0 && usage >= m.limits.LowThresh:
		st = MemoryLow
	}
	m.status.Usage, m.status.Sampled, m.status.State = usage, time.Now(), st
	m.setShedding(st == MemoryOverSoftLimit)
	if st == old {
		return
	}
	log := m.srv.log
	switch {
	case st == MemoryOverSoftLimit:
		m.status.OverLimit++
		m.lastPurge = time.Time{} // purge now
		log.Error("memory usage over the soft limit: refusing new mail (421/451 4.3.2 load shedding) and purging caches until it falls",
			"usage", usage, "soft_limit", m.limits.Soft, "hard_limit", m.limits.Hard)
	case old == MemoryOverSoftLimit:
		log.Warn("memory usage under the soft limit again: accepting mail", "usage", usage, "soft_limit", m.limits.Soft, "state", st.String())
	case st == MemoryLow:
		log.Warn("memory usage over the low threshold", "usage", usage, "low_thresh", m.limits.LowThresh, "soft_limit", m.limits.Soft)
	default:
		log.Info("memory usage under the low threshold again", "usage", usage, "low_thresh", m.limits.LowThresh)
	}
}

func (m *memoryMonitor) setShedding(on bool) { m.shedding.Store(on) }

// purge empties every registered cache and returns freed memory to the
// system; m.mu is held.
func (m *memoryMonitor) purge() {
	m.lastPurge = time.Now()
	start := time.Now()
	total := 0
	for _, c := range m.caches {
		n := c.purge()
		total += n
		if n > 0 {
			m.srv.log.Info("memory monitor purged cache", "cache", c.name, "entries", n)
		}
	}
	m.status.Purged += uint64(total)
	debug.FreeOSMemory()
	m.srv.log.Warn("memory monitor purged caches and returned free memory to the system",
		"caches", len(m.caches), "entries", total, "duration", time.Since(start))
}

// snapshot returns the status; m.mu is held.
func (m *memoryMonitor) snapshot() MemoryStatus {
	st := m.status
	st.Refused = m.refused.Load()
	return st
}

// shed returns the reason new mail is refused now, or "". Each non-empty
// answer counts as one refusal.
func (m *memoryMonitor) shed() string {
	if !m.shedding.Load() {
		return ""
	}
	m.refused.Add(1)
	return "load shedding"
}

// admit returns ErrLoadShedding, counted as a refusal, while shedding,
// unless the work was admitted earlier.
func (m *memoryMonitor) admit(admitted bool) error {
	if !admitted && m.shed() != "" {
		return ErrLoadShedding
	}
	return nil
}

// MemoryStatus returns what the memory monitor last saw. Usage is the
// process's resident anonymous memory: its RSS without file-backed pages,
// which are page cache the kernel reclaims (the badger spool's
// memory-mapped files would otherwise trip the limit). KumoMTA counts the
// whole cgroup's usage when it runs in one; mtakit counts only itself, so
// a neighbour in the same cgroup (a backup job, parallel test binaries)
// does not make it refuse mail, while the limits still default from the
// cgroup's memory.max.
func (s *Server) MemoryStatus() MemoryStatus {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	return s.mem.snapshot()
}

// CheckMemory samples memory usage now, acts on the result as the
// periodic check does (refusing mail, purging caches) and returns the
// new status.
func (s *Server) CheckMemory() MemoryStatus { return s.mem.check() }

// SetMemoryLimits replaces the memory monitor's limits (as KumoMTA's
// kumo.set_memory_soft_limit and friends, which may be called at any
// time; zero fields take their defaults) and checks usage against them
// at once.
func (s *Server) SetMemoryLimits(l MemoryLimits) MemoryStatus {
	s.mem.mu.Lock()
	s.mem.limits = l.WithDefaults()
	s.mem.mu.Unlock()
	return s.mem.check()
}

// RegisterCache adds a cache for the memory monitor to empty when usage
// crosses the soft limit, as KumoMTA purges its LRU caches. purge drops
// the entries and returns how many it dropped; it must be safe to call
// from another goroutine and must not call the server's memory methods.
// New registers the caches of the Resolver, the
// MTASTS source, the Shaper and the Signer that have a PurgeCache() int
// method (egress.Resolver, egress.MTASTS, shaping.Shaping, dkim.Data,
// luapolicy's Live and Policy do).
func (s *Server) RegisterCache(name string, purge func() int) {
	s.mem.mu.Lock()
	s.mem.caches = append(s.mem.caches, namedCache{name, purge})
	s.mem.mu.Unlock()
}

// purger is what RegisterCache wants, as a method.
type purger interface{ PurgeCache() int }

// registerCaches registers the purgeable caches among the server's parts.
func (s *Server) registerCaches() {
	seen := map[purger]bool{}
	for _, c := range []struct {
		name string
		v    any
	}{
		{"dns", s.resolver},
		{"mta-sts", s.mtasts},
		{"shaping", s.shaper},
		{"dkim", s.opts.Signer},
	} {
		if p, ok := c.v.(purger); ok && !seen[p] {
			seen[p] = true
			s.RegisterCache(c.name, p.PurgeCache)
		}
	}
}

// Live reports whether the server accepts messages: nil, or why not
// (memory over the soft limit, spool storage short of space). It is
// KumoMTA's check-liveness; mta/httpapi serves it.
func (s *Server) Live() error {
	if s.mem.shedding.Load() {
		return ErrLoadShedding
	}
	if err := s.space.check(); err != nil {
		return err
	}
	return nil
}

// memoryUsage returns the memory this process is charged for (see
// Server.MemoryStatus).
func memoryUsage() (int64, error) { return anonRSS() }

// anonRSS returns resident minus shared (file-backed) pages from
// /proc/self/statm.
func anonRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("mta: read memory usage: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, errors.New("mta: read memory usage: short /proc/self/statm")
	}
	resident, err1 := strconv.ParseInt(f[1], 10, 64)
	shared, err2 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("mta: parse /proc/self/statm: %w", err)
	}
	return (resident - shared) * int64(os.Getpagesize()), nil
}
