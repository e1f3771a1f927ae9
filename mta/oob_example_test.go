package mta_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"net/smtp"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// Out-of-band bounces sent to a log_oob listener domain become OOB log
// records, classified like delivery failures; with LogThenDrop the
// bounce itself is not queued.
func Example_outOfBandBounces() {
	sink := &memSink{}
	srv, err := mta.New(mta.Options{
		DataSpool:  spool.NewMemory(),
		MetaSpool:  spool.NewMemory(),
		Log:        sink,
		Logger:     quietLogger(),
		Classifier: bounce.DefaultClassifier(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	addr, err := srv.ListenSMTP(listener.Config{
		Addr:       "127.0.0.1:0",
		RelayHosts: []netip.Prefix{}, // accept mail only for the domains below
		Domains: listener.DomainMap{
			"bounce.example.com": {LogOOB: listener.LogThenDrop},
			"fbl.example.com":    {LogARF: listener.LogThenDrop},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	dsn := "From: MAILER-DAEMON@mx.example.net\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mx.example.net\r\n\r\n" +
		"Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: user unknown\r\n\r\n" +
		"--B--\r\n"
	if err := smtp.SendMail(addr.String(), nil, "", []string{"b@bounce.example.com"}, []byte(dsn)); err != nil {
		log.Fatal(err)
	}
	for _, r := range sink.OfType(logs.OOB) {
		fmt.Println(r.Type, r.Sender, r.Recipient[0], r.Response.Code, r.BounceClassification)
	}
	fmt.Println("queued:", srv.QueuedCount())
	// Output:
	// OOB b@bounce.example.com nobody@example.net 550 InvalidRecipient
	// queued: 0
}
