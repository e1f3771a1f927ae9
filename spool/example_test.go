package spool_test

import (
	"context"
	"fmt"
	"log"

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
