package egress

import (
	"sync"
	"time"
)

// brokenTLSSweep is the size above which Remember drops expired entries.
const brokenTLSSweep = 1024

// BrokenTLS remembers the sites whose STARTTLS failed, for KumoMTA's
// remember_broken_tls: while a site is remembered, the Opportunistic
// modes deliver to it without TLS; Required modes, MTA-STS and DANE are
// not affected. Share one BrokenTLS between the Dials of a server
// (DialOptions.BrokenTLS); it is safe for concurrent use.
type BrokenTLS struct {
	now   func() time.Time
	mu    sync.Mutex
	until map[string]time.Time
}

// NewBrokenTLS returns an empty BrokenTLS; now is the clock (nil means
// time.Now).
func NewBrokenTLS(now func() time.Time) *BrokenTLS {
	if now == nil {
		now = time.Now
	}
	return &BrokenTLS{now: now, until: map[string]time.Time{}}
}

// Remember marks site as having broken TLS for d.
func (b *BrokenTLS) Remember(site string, d time.Duration) {
	if b == nil || d <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if len(b.until) >= brokenTLSSweep {
		for k, t := range b.until {
			if !now.Before(t) {
				delete(b.until, k)
			}
		}
	}
	b.until[site] = now.Add(d)
}

// Broken reports whether site's TLS is remembered as broken.
func (b *BrokenTLS) Broken(site string) bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.until[site]
	if ok && !b.now().Before(t) {
		delete(b.until, site)
		return false
	}
	return ok
}
