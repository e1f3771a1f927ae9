package badgerspool

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

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
