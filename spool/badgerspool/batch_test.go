package badgerspool_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// StoreBatch stores writes to both spools of a pair; a write to a spool on
// another database makes it refuse the whole batch with ErrNotBatchable
// without writing anything, and spool.StoreAll then stores each write on
// its own.
func TestStoreBatch(t *testing.T) {
	ctx := context.Background()
	data, meta, err := badgerspool.OpenPair(t.TempDir(), badgerspool.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	defer meta.Close()
	other := openBadger(t, t.TempDir())
	defer other.Close()

	id := spool.NewID()
	if err := meta.StoreBatch(ctx, []spool.Write{{Spool: data, ID: id, Data: []byte("body")}, {Spool: meta, ID: id, Data: []byte("env")}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    *badgerspool.Spool
		want string
	}{{data, "body"}, {meta, "env"}} {
		if v, err := c.s.Load(ctx, id); err != nil || string(v) != c.want {
			t.Errorf("after StoreBatch: %q, %v; want %q", v, err, c.want)
		}
	}

	id2 := spool.NewID()
	mixed := []spool.Write{{Spool: data, ID: id2, Data: []byte("body2")}, {Spool: other, ID: id2, Data: []byte("elsewhere")}}
	if err := data.StoreBatch(ctx, mixed); !errors.Is(err, spool.ErrNotBatchable) {
		t.Fatalf("StoreBatch across databases: %v, want ErrNotBatchable", err)
	}
	if _, err := data.Load(ctx, id2); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("a refused batch wrote its first value: %v", err)
	}
	if err := spool.StoreAll(ctx, mixed...); err != nil {
		t.Fatal(err)
	}
	if v, err := other.Load(ctx, id2); err != nil || string(v) != "elsewhere" {
		t.Errorf("StoreAll fallback: %q, %v", v, err)
	}
	if v, err := data.Load(ctx, id2); err != nil || string(v) != "body2" {
		t.Errorf("StoreAll fallback: %q, %v", v, err)
	}

	if err := data.StoreBatch(ctx, nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	id3 := spool.NewID()
	if err := data.StoreBatch(canceled, []spool.Write{{Spool: data, ID: id3, Data: []byte("x")}}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
	if _, err := data.Load(ctx, id3); !errors.Is(err, spool.ErrNotFound) {
		t.Errorf("a canceled batch stored its value: %v", err)
	}
	if err := meta.Close(); err != nil {
		t.Fatal(err)
	}
	if err := data.StoreBatch(ctx, []spool.Write{{Spool: meta, ID: spool.NewID(), Data: []byte("late")}}); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("batch to a closed spool: %v, want ErrClosed", err)
	}
}
