package mta

import (
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/spool"
)

// Defaults of Options.MinFreeSpacePercent and MinFreeInodesPercent, as
// KumoMTA's define_spool min_free_space and min_free_inodes.
const (
	DefaultMinFreeSpacePercent  = 10
	DefaultMinFreeInodesPercent = 10
)

// spaceCheckInterval is how long a free-space reading is trusted.
const spaceCheckInterval = time.Second

var errLowSpace = &smtp.SMTPError{
	Code:         452,
	EnhancedCode: smtp.EnhancedCode{4, 3, 1},
	Message:      "insufficient system storage, try again later",
}

// spaceGuard refuses receptions while a spool's filesystem is short of
// space or inodes. Readings are cached for spaceCheckInterval.
type spaceGuard struct {
	spools         []spool.SpaceReporter
	minSpace, minI float64 // percent; <= 0 disables

	mu      sync.Mutex
	checked time.Time
	low     bool
	srv     *Server
}

func newSpaceGuard(s *Server, opts Options) *spaceGuard {
	g := &spaceGuard{srv: s, minSpace: opts.MinFreeSpacePercent, minI: opts.MinFreeInodesPercent}
	if g.minSpace == 0 {
		g.minSpace = DefaultMinFreeSpacePercent
	}
	if g.minI == 0 {
		g.minI = DefaultMinFreeInodesPercent
	}
	for _, sp := range []spool.Spool{opts.DataSpool, opts.MetaSpool} {
		if r, ok := sp.(spool.SpaceReporter); ok {
			g.spools = append(g.spools, r)
		}
	}
	return g
}

// check returns errLowSpace while any spool is below its thresholds.
func (g *spaceGuard) check() error {
	if len(g.spools) == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); now.Sub(g.checked) >= spaceCheckInterval {
		g.checked = now
		low := false
		for _, r := range g.spools {
			sp, err := r.Space()
			if err != nil {
				g.srv.log.Warn("cannot read spool free space", "err", err)
				continue
			}
			low = low || below(sp.FreeBytes, sp.TotalBytes, g.minSpace) || below(sp.FreeInodes, sp.TotalInodes, g.minI)
		}
		if low != g.low {
			if low {
				g.srv.log.Error("spool storage low: refusing mail with 452 until space returns", "min_free_space_percent", g.minSpace, "min_free_inodes_percent", g.minI)
			} else {
				g.srv.log.Info("spool storage recovered: accepting mail again")
			}
		}
		g.low = low
	}
	if g.low {
		return errLowSpace
	}
	return nil
}

func below(free, total uint64, minPercent float64) bool {
	return minPercent > 0 && total > 0 && float64(free)*100 < float64(total)*minPercent
}
