package badgerspool

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/spool"
)

func openTestBadger(t *testing.T) *Spool {
	t.Helper()
	b, err := Open(t.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// The durability promise rests on badger syncing every commit. A killed
// process cannot show a missing fsync (its writes survive in the page
// cache), so check the setting itself, for both ways of opening.
func TestBadgerSyncsEveryCommit(t *testing.T) {
	b := openTestBadger(t)
	if !b.e.db.Opts().SyncWrites {
		t.Error("Open: SyncWrites is off; Store would not be durable on return")
	}
	data, meta, err := OpenPair(t.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	defer meta.Close()
	if !data.e.db.Opts().SyncWrites {
		t.Error("OpenPair: SyncWrites is off")
	}
}

// The bookkeeping that keeps enumerations consistent with concurrent
// writes stays bounded while enumerations overlap without a break, and is
// empty once they end.
func TestBadgerEnumerationBookkeepingIsBounded(t *testing.T) {
	b := openTestBadger(t)
	ctx := context.Background()
	ids := make([]spool.ID, 1000)
	for i := range ids {
		ids[i] = spool.NewID()
		if err := b.Store(ctx, ids[i], []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxTouched := 0
	for g := range 2 {
		wg.Go(func() {
			for round := range 1 {
				err := b.Enumerate(ctx, func(id spool.ID, _ []byte) error {
					i := (int(id[15]) + g + round) % len(ids)
					if err := b.Remove(ctx, ids[i]); err != nil {
						return err
					}
					if err := b.Store(ctx, ids[i], []byte("w")); err != nil {
						return err
					}
					b.e.pendingMu.Lock()
					n := len(b.e.touched)
					b.e.pendingMu.Unlock()
					mu.Lock()
					maxTouched = max(maxTouched, n)
					mu.Unlock()
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.e.pendingMu.Lock()
	defer b.e.pendingMu.Unlock()
	if len(b.e.touched) != 0 || len(b.e.pending) != 0 || len(b.e.cursors) != 0 {
		t.Errorf("after the enumerations: %d touched, %d pending, %d cursors; want none", len(b.e.touched), len(b.e.pending), len(b.e.cursors))
	}
	// Each enumeration reads chunks of enumChunkEntries; a touch is kept
	// only until every enumeration has read past the commit that made it.
	if limit := 4 * enumChunkEntries; maxTouched > limit {
		t.Errorf("bookkeeping grew to %d keys during overlapping enumerations, want at most %d", maxTouched, limit)
	}
}

func TestSpaceOfSpoolDirectory(t *testing.T) {
	sp, err := openTestBadger(t).Space()
	if err != nil {
		t.Fatal(err)
	}
	if sp.TotalBytes == 0 || sp.FreeBytes > sp.TotalBytes {
		t.Errorf("space %+v", sp)
	}
}

func openTestPair(t *testing.T) (data, meta *Spool) {
	t.Helper()
	data, meta, err := OpenPair(t.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ValueLogGCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { data.Close(); meta.Close() })
	return data, meta
}

func (b *engine) commitCount() uint64 {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	return b.commits
}

// A batch of a message's data and meta is one commit, hence one sync,
// even for a lone writer; two Stores would be two commits unless they
// happened to meet in the queue.
func TestStoreBatchIsOneCommit(t *testing.T) {
	data, meta := openTestPair(t)
	ctx := context.Background()
	for range 20 {
		id := spool.NewID()
		before := data.e.commitCount()
		err := spool.StoreAll(ctx, spool.Write{Spool: data, ID: id, Data: make([]byte, 2048)}, spool.Write{Spool: meta, ID: id, Data: []byte("meta")})
		if err != nil {
			t.Fatal(err)
		}
		if n := data.e.commitCount() - before; n != 1 {
			t.Fatalf("data and meta took %d commits, want 1", n)
		}
	}
}

// Removals wait for a Store to share its commit; without one they are
// committed after removalLinger all the same.
func TestRemovalsRideWithStores(t *testing.T) {
	data, meta := openTestPair(t)
	ctx := context.Background()
	ids := make([]spool.ID, 10)
	for i := range ids {
		ids[i] = spool.NewID()
		if err := spool.StoreAll(ctx, spool.Write{Spool: data, ID: ids[i], Data: []byte("d")}, spool.Write{Spool: meta, ID: ids[i], Data: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	// Removals then a Store, well within removalLinger: one commit.
	before := data.e.commitCount()
	start := time.Now()
	for _, id := range ids[:5] {
		if err := meta.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := data.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Millisecond) // the commit loop has seen the removals
	if err := data.Store(ctx, spool.NewID(), []byte("new")); err != nil {
		t.Fatal(err)
	}
	// Only meaningful if the machine was quick enough for the removals
	// to be still waiting when the store came (removalLinger is 10 ms).
	if took := time.Since(start); took < 8*time.Millisecond {
		if n := data.e.commitCount() - before; n != 1 {
			t.Errorf("10 removals and a store took %d commits, want 1", n)
		}
	} else {
		t.Logf("removals and store took %v: commit count not checked", took)
	}
	data.e.pendingMu.Lock()
	pending := len(data.e.pending)
	data.e.pendingMu.Unlock()
	if pending != 0 {
		t.Errorf("%d removals still pending after the store's commit", pending)
	}

	// Removals alone are committed after the linger.
	before = data.e.commitCount()
	for _, id := range ids[5:] {
		if err := data.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for data.e.commitCount() == before {
		if time.Now().After(deadline) {
			t.Fatal("lone removals were not committed within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	for _, id := range ids[5:] {
		if _, err := data.Load(ctx, id); !errors.Is(err, spool.ErrNotFound) {
			t.Errorf("removed %s: %v", id, err)
		}
	}
}
