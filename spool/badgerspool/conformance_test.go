package badgerspool_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
	"github.com/mtakit/mtakit/spool/spooltest"
)

func TestBadger(t *testing.T) {
	spooltest.RunDurable(t, func(t *testing.T, dir string) spool.Spool {
		s, err := badgerspool.Open(dir, badgerspool.Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// The two spools of a pair behave as independent spools (each passes the
// suite, durably) and share one database.
func TestBadgerPair(t *testing.T) {
	open := func(which int) func(t *testing.T, dir string) spool.Spool {
		return func(t *testing.T, dir string) spool.Spool {
			data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: testLogger(t), ValueLogGCInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			if which == 1 {
				return closeBoth{Spool: meta, other: data}
			}
			return closeBoth{Spool: data, other: meta}
		}
	}
	t.Run("data", func(t *testing.T) { spooltest.RunDurable(t, open(0)) })
	t.Run("meta", func(t *testing.T) { spooltest.RunDurable(t, open(1)) })

	t.Run("isolation", func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		id := spool.NewID()
		if err := data.Store(ctx, id, []byte("body")); err != nil {
			t.Fatal(err)
		}
		if err := meta.Store(ctx, id, []byte("envelope")); err != nil {
			t.Fatal(err)
		}
		if err := meta.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
		if v, err := data.Load(ctx, id); err != nil || string(v) != "body" {
			t.Fatalf("data after meta removal: %q, %v", v, err)
		}
		if _, err := meta.Load(ctx, id); !errors.Is(err, spool.ErrNotFound) {
			t.Fatalf("meta after removal: %v", err)
		}
		// Closing one leaves the other usable; closing both releases the
		// directory for a new open.
		if err := meta.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := data.Load(ctx, id); err != nil {
			t.Fatalf("data after meta closed: %v", err)
		}
		if err := data.Close(); err != nil {
			t.Fatal(err)
		}
		data2, meta2, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer meta2.Close()
		defer data2.Close()
		if n := count(t, meta2); n != 0 {
			t.Errorf("meta has %d entries after reopen, want 0", n)
		}
		if n := count(t, data2); n != 1 {
			t.Errorf("data has %d entries after reopen, want 1", n)
		}
	})
}

// closeBoth is the spool under test plus its sibling, closed together so
// the database closes when the suite closes the spool.
type closeBoth struct {
	spool.Spool
	other spool.Spool
}

func (c closeBoth) Close() error {
	err := c.Spool.Close()
	c.other.Close()
	return err
}

func count(t *testing.T, s spool.Spool) int {
	t.Helper()
	n := 0
	if err := s.Enumerate(context.Background(), func(spool.ID, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
