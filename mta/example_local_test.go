package mta_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"net/smtp"
	"strconv"
	"time"

	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// Delivering to an SMTP server on loopback (here a test sink; in real life
// a local relay or a test double) needs two settings whose defaults, as in
// KumoMTA, protect production servers: the path config's ProhibitedHosts
// must be an empty non-nil slice (nil means "the defaults", which include
// 127.0.0.0/8, and the message would bounce), and the queue must name the
// host (mx_list) because loopback has no MX record. On the receiving side,
// listener.Config.RelayHosts nil lets loopback clients relay; pass an
// empty slice to refuse them.
func Example_deliverToLoopback() {
	sink, err := smtpsink.Start(smtpsink.Options{}) // any SMTP server on 127.0.0.1
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()
	host, portText, _ := net.SplitHostPort(sink.Addr())
	port, _ := strconv.Atoi(portText)

	srv, err := mta.New(mta.Options{
		DataSpool: spool.NewMemory(),
		MetaSpool: spool.NewMemory(),
		Logger:    slog.New(slog.DiscardHandler),
		Shaper: shaping.PathFunc(func(context.Context, string, string, string) (shaping.PathConfig, error) {
			pc := shaping.Default()
			pc.ProhibitedHosts = []netip.Prefix{} // allow loopback
			pc.SMTPPort = port
			pc.EnableTLS = shaping.Disabled
			return pc, nil
		}),
		Policy: mta.Policy{QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{Protocol: mta.Protocol{MXList: []string{host}}}, nil
		}},
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sink.WaitCount(ctx, 1); err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered:", sink.Stats().Messages)
	// Output: delivered: 1
}
