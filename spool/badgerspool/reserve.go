package badgerspool

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrNoSpace is returned by Store when the spool's filesystem has no room
// for the write even after the reserve was given up. Nothing was written.
var ErrNoSpace = errors.New("no space left for the spool (reserve exhausted)")

// DefaultReserve is the default of Options.Reserve.
const DefaultReserve = 64 << 20

// ReserveFile is the name of the space reserve file in the spool
// directory (see Options.Reserve); the part kept for shutdown and start-up
// has the suffix ".shutdown".
const ReserveFile = "mtakit-space-reserve"

// reserve keeps files of preallocated space in the spool directory.
//
// Badger writes its write-ahead log, value log and tables through
// memory-mapped files, so when the filesystem fills up a write does not
// fail: the process dies of SIGBUS, and on restart it dies again while
// replaying (a crash loop). Before each commit the spool checks free
// space; when a commit might not fit it deletes the first half of the
// reserve, which gives badger room for what is in flight, and refuses
// writes that still would not fit. The second half is given up only at
// Close and at open (badger flushes its memtable to a table then), so
// shutting down and starting again on a full disk works. Both come back
// when space does.
type reserve struct {
	paths [2]string // runtime, shutdown
	size  int64     // of each
	log   *slog.Logger

	mu        sync.Mutex
	present   [2]bool
	lastRetry time.Time
}

const (
	runtimeReserve = iota
	shutdownReserve
)

func newReserve(dir string, total int64, log *slog.Logger) *reserve {
	r := &reserve{size: total / 2, log: log}
	r.paths[runtimeReserve] = filepath.Join(dir, ReserveFile)
	r.paths[shutdownReserve] = filepath.Join(dir, ReserveFile+".shutdown")
	for i, p := range r.paths {
		if fi, err := os.Stat(p); err == nil && fi.Size() >= r.size {
			r.present[i] = true
		}
	}
	return r
}

// margin is room kept beyond a commit's own bytes: badger's manifest,
// index and memtable bookkeeping.
const margin = 8 << 20

// admit decides whether a commit of n bytes may go ahead: nil, or
// ErrNoSpace. It releases the runtime reserve when that makes the
// difference, and recreates the reserve (at most every 10s) when space
// has come back.
func (r *reserve) admit(dir string, n int64) error {
	if r.size <= 0 {
		return nil
	}
	need := uint64(2*n + margin) // a value may be written to the WAL and the value log
	free, err := freeBytes(dir)
	if err != nil {
		return nil // cannot tell: let badger try, as without a reserve
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if free >= need {
		if (!r.present[0] || !r.present[1]) && free >= need+uint64(4*r.size) && time.Since(r.lastRetry) > 10*time.Second {
			r.lastRetry = time.Now()
			r.createLocked()
		}
		return nil
	}
	if r.releaseLocked(runtimeReserve) {
		if free, err = freeBytes(dir); err == nil && free >= need {
			return nil
		}
	}
	return ErrNoSpace
}

// forFlush gives up the shutdown reserve when the disk is nearly full, so
// that badger's memtable flush at Close or at open has room.
func (r *reserve) forFlush(dir string) {
	if r.size <= 0 {
		return
	}
	free, err := freeBytes(dir)
	if err != nil || free >= uint64(r.size+margin) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(runtimeReserve)
	r.releaseLocked(shutdownReserve)
}

func (r *reserve) releaseLocked(i int) bool {
	if !r.present[i] {
		return false
	}
	if err := os.Remove(r.paths[i]); err != nil && !os.IsNotExist(err) {
		r.log.Error("spool: cannot release the space reserve", "path", r.paths[i], "err", err)
		return false
	}
	r.present[i] = false
	r.log.Error("spool: filesystem full; released space reserve", "path", r.paths[i], "bytes", r.size)
	// tmpfs and others free an unlinked file's blocks a moment later.
	time.Sleep(50 * time.Millisecond)
	return true
}

// createLocked creates the missing reserve files: real blocks, synced,
// so the space is taken now.
func (r *reserve) createLocked() {
	for i, p := range r.paths {
		if r.present[i] {
			continue
		}
		if err := r.create(p); err != nil {
			r.log.Warn("spool: cannot create the space reserve", "path", p, "err", err)
			return
		}
		r.present[i] = true
	}
}

func (r *reserve) create(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = allocate(f, r.size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// ensure creates the reserve at open if there is room for it.
func (r *reserve) ensure(dir string) {
	if r.size <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if free, err := freeBytes(dir); err == nil && free >= uint64(4*r.size+margin) {
		r.createLocked()
	}
}
