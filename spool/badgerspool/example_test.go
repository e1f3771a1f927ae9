package badgerspool_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

func ExampleOpen() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "spool")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Accept two messages, then deliver the first.
	s, err := badgerspool.Open(dir, badgerspool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	first, second := spool.NewID(), spool.NewID()
	for _, id := range []spool.ID{first, second} {
		// When Store returns nil the message is on disk: now is the
		// time to answer 250.
		if err := s.Store(ctx, id, []byte("message "+id.String()[:4])); err != nil {
			log.Fatal(err)
		}
	}
	if err := s.Remove(ctx, first); err != nil {
		log.Fatal(err)
	}
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}

	// After a restart, recover what is still queued, oldest first.
	s, err = badgerspool.Open(dir, badgerspool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	err = s.Enumerate(ctx, func(id spool.ID, data []byte) error {
		fmt.Println(id == second, len(data))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: true 12
}
