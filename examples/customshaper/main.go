// Command customshaper runs an MTA whose traffic shaping is Go code: a
// BackoffShaper with per-destination limits that pauses a site when it
// answers 421 and resumes by itself.
//
//	go run ./examples/customshaper -listen 127.0.0.1:2528
package main

import (
	"context"
	"flag"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2528", "ESMTP listen address")
	flag.Parse()
	shaper := &BackoffShaper{
		Default: Limits{Connections: 10, MessageRate: "50/s"},
		Domains: map[string]Limits{"gmail.com": {Connections: 5, MessageRate: "20/s"}},
		Pause:   5 * time.Minute,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := newServer(shaper, mta.Options{})
	if err != nil {
		log.Fatal(err)
	}
	addr, err := srv.ListenSMTP(listener.Config{Addr: *listen})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", addr)
	<-ctx.Done()
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// newServer builds the server around shaper; opts may add resolver,
// queue config and logs (the test does). Spools are in memory to keep the
// example about shaping.
func newServer(shaper *BackoffShaper, opts mta.Options) (*mta.Server, error) {
	opts.DataSpool = spool.NewMemory()
	opts.MetaSpool = spool.NewMemory()
	opts.Shaper = shaper
	return mta.New(opts)
}
