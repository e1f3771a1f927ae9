package egress_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/shaping"
)

func ExampleDial() {
	// A test SMTP server on 127.0.0.1 stands in for a mail host.
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()
	mx := netip.MustParseAddrPort(sink.Addr())

	src, err := egress.NewSource(egress.SourceOptions{Name: "ip-1", EHLODomain: "mta.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	cfg := shaping.Default()
	cfg.ProhibitedHosts = []netip.Prefix{} // loopback is prohibited by default
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Hosts would normally come from Resolver.ResolveMX (MXPlan.Hosts).
	conn, err := egress.Dial(ctx, egress.DialOptions{
		Source: src,
		Hosts:  []egress.MXHost{{Name: "mx.example.com", Addrs: []netip.Addr{mx.Addr()}}},
		Port:   int(mx.Port()),
		Config: cfg,
	})
	if err != nil {
		resp, _ := egress.ResponseOf(err)
		log.Fatalf("every recipient gets: %s", resp)
	}
	defer conn.Close()

	rcpts := []string{"alice@example.com", "tempfail@example.com", "permfail@example.com"}
	res, err := conn.Send(ctx, egress.Envelope{
		Sender:     "sender@example.com",
		Recipients: rcpts,
		Data:       []byte("From: sender@example.com\r\nSubject: hello\r\n\r\nHi!\r\n"),
	})
	if err != nil {
		log.Printf("connection failed: %v", err) // res still has a response per recipient
	}
	for i, r := range res.Recipients {
		record := "TransientFailure"
		switch {
		case r.Success():
			record = "Delivery"
		case r.Permanent():
			record = "Bounce"
		}
		fmt.Printf("%s %s: %s\n", rcpts[i], record, r)
	}
	info := conn.Info()
	fmt.Println("via", info.Source, "to", info.Host, "TLS:", info.TLS != nil, "usable:", conn.Usable())
	// Output:
	// alice@example.com Delivery: 250 2.0.0 OK: queued as S1
	// tempfail@example.com TransientFailure: 451 4.3.0 tempfail requested
	// permfail@example.com Bounce: 550 5.1.1 permfail requested
	// via ip-1 to mx.example.com TLS: false usable: true
}
