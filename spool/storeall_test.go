package spool_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mtakit/mtakit/spool"
)

// Spools that are not BatchStorers get one Store per write; a failing
// write's error comes back while the others are stored.
func TestStoreAllFallback(t *testing.T) {
	ctx := context.Background()
	a, b := spool.NewMemory(), spool.NewMemory()
	id := spool.NewID()
	if err := spool.StoreAll(ctx); err != nil {
		t.Fatalf("no writes: %v", err)
	}
	if err := spool.StoreAll(ctx, spool.Write{Spool: a, ID: id, Data: []byte("one")}, spool.Write{Spool: b, ID: id, Data: []byte("two")}); err != nil {
		t.Fatal(err)
	}
	for s, want := range map[spool.Spool]string{a: "one", b: "two"} {
		if v, err := s.Load(ctx, id); err != nil || string(v) != want {
			t.Errorf("Load = %q, %v; want %q", v, err, want)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	id2 := spool.NewID()
	err := spool.StoreAll(ctx, spool.Write{Spool: a, ID: id2, Data: []byte("x")}, spool.Write{Spool: b, ID: id2, Data: []byte("y")})
	if !errors.Is(err, spool.ErrClosed) {
		t.Errorf("StoreAll to a closed spool: %v, want ErrClosed", err)
	}
	if v, err := a.Load(ctx, id2); err != nil || string(v) != "x" {
		t.Errorf("the other write: %q, %v", v, err)
	}
}
