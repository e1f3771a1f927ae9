package logs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Syncer is implemented by sinks that can make records durable on
// request. Sinks that wrap others (Multi, the metrics sink of
// mta/metrics) implement it by passing the calls on, so a server can ask
// its sink without knowing what it is made of.
type Syncer interface {
	// Syncs reports whether Sync(t) makes records of type t durable
	// (LocalConfig.SyncReception for Reception). It does not change.
	Syncs(t RecordType) bool
	// Sync returns once every record of type t logged before the call is
	// on stable storage, if Syncs(t); otherwise it returns nil at once.
	// A non-nil error means those records may be missing after a crash.
	Sync(t RecordType) error
}

// Syncs reports whether s keeps records of type t durable on Sync: s
// implements Syncer and its Syncs(t) is true.
func Syncs(s Sink, t RecordType) bool {
	y, ok := s.(Syncer)
	return ok && y.Syncs(t)
}

// Sync calls s.Sync(t) if s implements Syncer, and returns nil otherwise.
func Sync(s Sink, t RecordType) error {
	if y, ok := s.(Syncer); ok {
		return y.Sync(t)
	}
	return nil
}

// Syncs implements Syncer: true for Reception with
// LocalConfig.SyncReception.
func (l *Local) Syncs(t RecordType) bool { return l.cfg.SyncReception && t == Reception }

// Sync implements Syncer. With LocalConfig.SyncReception set and t
// Reception, it waits until every record queued before the call is
// written, its compressed block ended, and the segment file (and, for a
// new segment, the directory) fsynced. Concurrent callers share the
// work: each waits for the next sync round that starts after its call,
// and one round serves every caller that arrived while the previous one
// ran, so the cost is one fsync per group, not per record (group
// commit). An error means the round's records may not be durable: a
// write, flush or fsync failed since the previous round (the failure is
// also reported as usual, see WriteError). After Close it returns
// ErrClosed.
func (l *Local) Sync(t RecordType) error {
	if !l.Syncs(t) {
		return nil
	}
	l.syncMu.Lock()
	if l.syncClosed {
		l.syncMu.Unlock()
		return ErrClosed
	}
	r := l.syncNext
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		l.syncNext = r
	}
	l.syncMu.Unlock()
	select {
	case l.syncWake <- struct{}{}:
	default: // a wake-up is pending already
	}
	<-r.done
	return r.err
}

// syncRound is one group commit: every caller of Sync that found it in
// Local.syncNext waits for it.
type syncRound struct {
	done chan struct{} // closed when err is set
	err  error
}

// syncRound runs on the writer goroutine: it takes the pending round,
// writes everything queued, ends the block and fsyncs the segment. It
// reports whether the sink is closed, as drain does.
func (w *writer) syncRound() (closed bool) {
	l := w.l
	l.syncMu.Lock()
	r := l.syncNext
	l.syncNext = nil
	l.syncMu.Unlock()
	if r == nil {
		return false // served by an earlier round
	}
	// Every record of the round's callers was queued before they joined
	// it, so before this drain.
	closed = w.drain()
	w.flush()
	if s := w.seg; s != nil {
		if err := s.sync(); err != nil {
			w.fail(s.path, s.unsynced, err)
			w.abandonSegment()
		}
	}
	r.err = w.syncFailure
	w.syncFailure = nil
	close(r.done)
	return closed
}

// endSync completes the pending round at shutdown, after the last
// segment was finished (and, in sync mode, fsynced), and refuses later
// calls.
func (w *writer) endSync() {
	l := w.l
	l.syncMu.Lock()
	l.syncClosed = true
	r := l.syncNext
	l.syncNext = nil
	l.syncMu.Unlock()
	if r != nil {
		r.err = w.syncFailure
		close(r.done)
	}
}

// fileSyncer is what *os.File offers; test doubles may lack it.
type fileSyncer interface{ Sync() error }

// sync fsyncs the segment file and, the first time, its directory, so
// that the file's name survives a crash as well as its content.
func (s *segment) sync() error {
	if s.unsynced == 0 && s.dirSynced {
		return nil // nothing written since the last fsync
	}
	if f, ok := s.file.(fileSyncer); ok {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync segment %s: %w", s.path, err)
		}
	}
	if !s.dirSynced {
		if err := syncDir(filepath.Dir(s.path)); err != nil {
			return fmt.Errorf("fsync log directory of segment %s: %w", s.path, err)
		}
		s.dirSynced = true
	}
	s.unsynced = 0
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, os.ErrInvalid) {
		return nil // a filesystem that cannot sync directories
	}
	return err
}
