package mta_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/smtp"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// A server built in code: in-memory spools (use badgerspool.Open for a
// durable one), a listener on a free loopback port, and a policy hook that
// puts every message into a tenant's queue.
func Example() {
	srv, err := mta.New(mta.Options{
		Hostname:  "mx.example.com",
		DataSpool: spool.NewMemory(),
		MetaSpool: spool.NewMemory(),
		Logger:    slog.New(slog.DiscardHandler),
		// Queue without sending, so the example makes no connections.
		HoldDelivery: true,
		Policy: mta.Policy{
			MessageReceived: func(_ context.Context, m *mta.Message) error {
				m.SetMeta(mta.MetaTenant, "acme")
				return nil
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	msg := "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
	if err := smtp.SendMail(addr.String(), nil, "a@example.com", []string{"b@example.net"}, []byte(msg)); err != nil {
		log.Fatal(err)
	}
	fmt.Println(srv.QueueSummary())
	// Output: map[acme@example.net:1]
}

// Inject spools a message without SMTP, one message per recipient.
func ExampleServer_Inject() {
	srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), Logger: slog.New(slog.DiscardHandler), HoldDelivery: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	ids, err := srv.Inject(context.Background(), &mta.Submission{
		Sender:     "app@example.com",
		Recipients: []string{"x@example.net", "y@example.org"},
		Data:       []byte("From: app@example.com\r\nSubject: report\r\n\r\ndone\r\n"),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(ids), srv.QueuedCount())
	// Output: 2 2
}

func ExampleQueueName() {
	fmt.Println(mta.QueueName("spring", "acme", "Example.COM", ""))
	fmt.Println(mta.QueueName("", "acme", "example.com", "relay.example.net"))
	fmt.Println(mta.QueueName("", "", "example.com", ""))
	// Output:
	// spring:acme@example.com
	// acme@example.com!relay.example.net
	// example.com
}
