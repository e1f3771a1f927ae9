package mta

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// foreignID returns an ID as an earlier run of the program made it.
func foreignID() spool.ID {
	id := spool.NewID()
	id[15] ^= 0xff
	return id
}

// Bodies left without meta by a crash during reception are reclaimed at
// start-up; nothing that might still be needed is touched.
func TestOrphanedBodiesAreReclaimed(t *testing.T) {
	ctx := context.Background()
	data, meta := spool.NewMemory(), spool.NewMemory()
	store := func(s spool.Spool, id spool.ID, b []byte) {
		t.Helper()
		if err := s.Store(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	orphan, corrupt, queued, receiving := foreignID(), foreignID(), foreignID(), spool.NewID()
	store(data, orphan, []byte("body without meta"))
	store(data, corrupt, []byte("body with unreadable meta"))
	store(meta, corrupt, []byte("{not json"))
	store(data, queued, []byte("queued body"))
	m, err := encodeMeta(&storedMeta{Sender: "s@example.com", Recipients: []string{"r@example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	store(meta, queued, m)
	store(data, receiving, []byte("this process is still storing its meta"))
	// A shared body a queued message refers to stays; one whose last
	// message was finished just before a crash goes.
	sharedBody, deadBody, sharer := foreignID(), foreignID(), foreignID()
	store(data, sharedBody, []byte("shared body"))
	store(data, deadBody, []byte("body of finished messages"))
	store(data, sharer, []byte("X-Own: field\r\n"))
	sm, err := encodeMeta(&storedMeta{Sender: "s@example.com", Recipients: []string{"r2@example.net"}, Body: sharedBody})
	if err != nil {
		t.Fatal(err)
	}
	store(meta, sharer, sm)

	srv, err := New(Options{DataSpool: data, MetaSpool: meta, HoldDelivery: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range []spool.ID{orphan, deadBody} {
		for {
			_, err := data.Load(ctx, id)
			if errors.Is(err, spool.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphaned body %s not reclaimed", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for name, id := range map[string]spool.ID{"unreadable meta": corrupt, "queued": queued, "this process's": receiving, "shared": sharedBody, "sharer's own": sharer} {
		if _, err := data.Load(ctx, id); err != nil {
			t.Errorf("%s body: %v; it must be kept", name, err)
		}
	}
	if srv.QueuedCount() != 2 {
		t.Errorf("%d queued, want the two with readable meta", srv.QueuedCount())
	}
}
