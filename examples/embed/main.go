// Command embed shows an mtakit server built in Go code: a durable spool,
// KumoMTA-format logs, a relay policy, and an ESMTP listener.
package main

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

func main() {
	data, meta, err := badgerspool.OpenPair("embed-data/spool", badgerspool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	records, err := logs.OpenLocal(logs.LocalConfig{LogDir: "embed-data/logs"})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := mta.New(mta.Options{
		DataSpool: data,
		MetaSpool: meta,
		Log:       records,
		Policy: mta.Policy{
			// Put every message from this program's users into a tenant.
			MessageReceived: func(_ context.Context, m *mta.Message) error {
				m.SetMeta(mta.MetaTenant, "embedded")
				return nil
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Loopback clients may relay anywhere; anyone may send to example.com.
	addr, err := srv.ListenSMTP(listener.Config{
		Addr:    "127.0.0.1:2526",
		Domains: listener.DomainMap{"example.com": {RelayTo: true}},
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", addr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
}
