package logs

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// syncCountingFile is a segment file that counts fsyncs, can make them
// slow, and fails them while fail is set.
type syncCountingFile struct {
	*os.File
	syncs *atomic.Int64
	delay time.Duration
	fail  *atomic.Bool
}

func (f *syncCountingFile) Sync() error {
	time.Sleep(f.delay)
	if f.fail != nil && f.fail.Load() {
		return &os.PathError{Op: "fsync", Path: f.Name(), Err: syscall.EIO}
	}
	f.syncs.Add(1)
	return f.File.Sync()
}

func countingSyncs(cfg *LocalConfig, syncs *atomic.Int64, delay time.Duration, fail *atomic.Bool) {
	cfg.openFile = func(path string) (io.WriteCloser, error) {
		f, err := createSegmentFile(path)
		if err != nil {
			return nil, err
		}
		return &syncCountingFile{File: f.(*os.File), syncs: syncs, delay: delay, fail: fail}, nil
	}
}

// After Sync(Reception) returns, the records are in the segment file
// (readable while it is still open) and fsynced, without Flush, Close or
// the flush timer.
func TestLocalSyncReception(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("uncompressed=%v", plain), func(t *testing.T) {
			dir := t.TempDir()
			var syncs atomic.Int64
			cfg := LocalConfig{LogDir: dir, Uncompressed: plain, SyncReception: true, FlushInterval: -1}
			countingSyncs(&cfg, &syncs, 0, nil)
			l := openLocal(t, cfg)
			if !l.Syncs(Reception) || l.Syncs(Delivery) || !Syncs(l, Reception) {
				t.Fatalf("Syncs: Reception %v, Delivery %v; want only Reception", l.Syncs(Reception), l.Syncs(Delivery))
			}
			logAll(t, l, makeRecords(3))
			if err := l.Sync(Delivery); err != nil || syncs.Load() != 0 {
				t.Fatalf("Sync(Delivery) = %v after %d fsyncs; want nil and no fsync", err, syncs.Load())
			}
			if err := l.Sync(Reception); err != nil {
				t.Fatalf("Sync(Reception): %v", err)
			}
			if syncs.Load() != 1 {
				t.Errorf("%d fsyncs for one Sync, want 1", syncs.Load())
			}
			got, err := ReadDir(dir)
			if err != nil || len(got) != 3 {
				t.Fatalf("ReadDir of the open segment = %d records, %v; want 3", len(got), err)
			}
			// Nothing new: the round succeeds without another fsync.
			if err := l.Sync(Reception); err != nil || syncs.Load() != 1 {
				t.Fatalf("second Sync = %v after %d fsyncs in all; want nil and no new fsync", err, syncs.Load())
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(Reception); !errors.Is(err, ErrClosed) {
				t.Errorf("Sync after Close = %v, want ErrClosed", err)
			}
		})
	}
}

// Without SyncReception, Sync does nothing: no flush, no fsync.
func TestLocalSyncOffByDefault(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	cfg := LocalConfig{LogDir: dir, FlushInterval: -1}
	countingSyncs(&cfg, &syncs, 0, nil)
	l := openLocal(t, cfg)
	logAll(t, l, makeRecords(3))
	if Syncs(l, Reception) {
		t.Fatal("Syncs(Reception) without SyncReception")
	}
	if err := Sync(l, Reception); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadDir(dir); len(got) != 0 || syncs.Load() != 0 {
		t.Fatalf("Sync without SyncReception wrote %d records and fsynced %d times; want neither", len(got), syncs.Load())
	}
}

// Concurrent callers share rounds: with a slow fsync, callers arriving
// during one round are all served by the next, so there are far fewer
// fsyncs than Sync calls, and every caller's record is durable when its
// call returns.
func TestLocalSyncGroupCommit(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	cfg := LocalConfig{LogDir: dir, SyncReception: true}
	countingSyncs(&cfg, &syncs, 5*time.Millisecond, nil)
	l := openLocal(t, cfg)

	const callers, each = 40, 10
	var (
		mu       sync.Mutex
		durable  = map[string]bool{} // IDs whose Sync returned
		wg       sync.WaitGroup
		failures atomic.Int32
	)
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				r := receptionRecord(c*each + i)
				if err := l.Log(r); err != nil {
					failures.Add(1)
					return
				}
				if err := l.Sync(Reception); err != nil {
					failures.Add(1)
					return
				}
				mu.Lock()
				durable[r.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d Log or Sync calls failed", failures.Load())
	}
	// Read before Close: what Sync promised is in the open segment.
	got, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.ID] = true
	}
	for id := range durable {
		if !seen[id] {
			t.Fatalf("record %s missing from the segment after its Sync returned", id)
		}
	}
	n := syncs.Load()
	t.Logf("%d Sync calls, %d fsyncs", callers*each, n)
	if n == 0 || n > callers*each/4 {
		t.Errorf("%d fsyncs for %d concurrent Sync calls; want them shared (at most a quarter)", n, callers*each)
	}
}

// A failed fsync fails the round: Sync returns the error (also kept as a
// WriteError), the segment is abandoned, and the next round syncs a new
// segment.
func TestLocalSyncFailure(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	var fail atomic.Bool
	cfg := LocalConfig{LogDir: dir, SyncReception: true, Logger: slog.New(slog.DiscardHandler)}
	countingSyncs(&cfg, &syncs, 0, &fail)
	l := openLocal(t, cfg)

	fail.Store(true)
	if err := l.Log(receptionRecord(1)); err != nil {
		t.Fatal(err)
	}
	err := l.Sync(Reception)
	var we *WriteError
	if !errors.As(err, &we) || !errors.Is(err, syscall.EIO) || we.Records != 1 {
		t.Fatalf("Sync with a failing fsync = %v, want a WriteError of 1 record wrapping EIO", err)
	}
	fail.Store(false)
	if err := l.Log(receptionRecord(2)); !errors.As(err, &we) {
		t.Errorf("Log after the failure = %v, want the failure reported again as a WriteError", err)
	}
	if err := l.Sync(Reception); err != nil {
		t.Fatalf("Sync after the disk recovered: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if p := segments(t, dir); len(p) != 2 {
		t.Fatalf("%d segments, want the abandoned one and a new one", len(p))
	}
}

// A write failure between rounds (here: while the writer drains on its
// own) is reported by the next round, since the records it lost may be
// that round's.
func TestLocalSyncReportsEarlierWriteFailure(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	cfg := LocalConfig{LogDir: dir, SyncReception: true, Logger: slog.New(slog.DiscardHandler)}
	cfg.openFile = func(path string) (io.WriteCloser, error) {
		f, err := createSegmentFile(path)
		if err != nil {
			return nil, err
		}
		return &failingFile{f: f.(*os.File), fail: &fail}, nil
	}
	l := openLocal(t, cfg)
	logAll(t, l, makeRecords(2))
	if err := l.Sync(Reception); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	logAll(t, l, makeRecords(1))
	if err := l.Flush(); err == nil { // the failure happens here, outside a round
		t.Fatal("Flush with a failing disk succeeded")
	}
	fail.Store(false)
	if err := l.Sync(Reception); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Sync after a failed write = %v, want it reported (ENOSPC)", err)
	}
	if err := l.Sync(Reception); err != nil {
		t.Fatalf("Sync once the failure was reported: %v", err)
	}
}

// In sync mode a segment closed by rotation is fsynced before it is
// closed, so records synced by a round that rotated are durable too.
func TestLocalSyncRotation(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	cfg := LocalConfig{LogDir: dir, SyncReception: true, MaxFileSize: 1500}
	countingSyncs(&cfg, &syncs, 0, nil)
	l := openLocal(t, cfg)
	logAll(t, l, makeRecords(4)) // each record is about 800 bytes: two segments
	if err := l.Sync(Reception); err != nil {
		t.Fatal(err)
	}
	if p := segments(t, dir); len(p) != 2 {
		t.Fatalf("%d segments, want 2", len(p))
	}
	if n := syncs.Load(); n != 2 {
		t.Errorf("%d fsyncs, want 2: each segment when rotation closed it", n)
	}
	if got, err := ReadDir(dir); err != nil || len(got) != 4 {
		t.Fatalf("ReadDir = %d records, %v; want 4", len(got), err)
	}
}

// Multi syncs its members and reports whether any syncs a type.
func TestMultiSync(t *testing.T) {
	a := openLocal(t, LocalConfig{LogDir: t.TempDir(), SyncReception: true, FlushInterval: -1})
	b := openLocal(t, LocalConfig{LogDir: t.TempDir(), FlushInterval: -1})
	m := Multi(a, b, Discard)
	if !Syncs(m, Reception) || Syncs(m, Delivery) || Syncs(Multi(b, Discard), Reception) {
		t.Fatal("Multi.Syncs does not reflect its members")
	}
	if err := m.Log(receptionRecord(1)); err != nil {
		t.Fatal(err)
	}
	if err := Sync(m, Reception); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadDir(a.Dir()); len(got) != 1 {
		t.Errorf("the syncing member holds %d records after Multi's Sync, want 1", len(got))
	}
}

// A record that cannot be encoded is reported as an *EncodeError, so a
// caller can tell that it was not logged at all.
func TestLocalEncodeError(t *testing.T) {
	l := openLocal(t, LocalConfig{LogDir: t.TempDir()})
	r := receptionRecord(1)
	r.Meta["bad"] = math.NaN()
	err := l.Log(r)
	var ee *EncodeError
	if !errors.As(err, &ee) || ee.ID != r.ID || ee.Type != Reception {
		t.Fatalf("Log of a NaN meta value = %v, want an *EncodeError naming the record", err)
	}
}
