package spool_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/mtakit/mtakit/spool"
)

func ExampleNewMemory() {
	ctx := context.Background()
	s := spool.NewMemory()
	defer s.Close()

	id := spool.NewID()
	if err := s.Store(ctx, id, []byte("Subject: hello\r\n\r\nHi!\r\n")); err != nil {
		log.Fatal(err)
	}
	body, err := s.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", body)
	// Output: "Subject: hello\r\n\r\nHi!\r\n"
}

func ExampleOpenBadger() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "spool")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Accept two messages, then deliver the first.
	s, err := spool.OpenBadger(dir, spool.BadgerOptions{})
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
	s, err = spool.OpenBadger(dir, spool.BadgerOptions{})
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
