// Command customspool runs an MTA whose spool is the program's own: each
// message a file in a directory (FileSpool), checked by spool/spooltest.
// A program with its own spool never links badger.
//
//	go run ./examples/customspool -listen 127.0.0.1:2527 -dir customspool-data
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2527", "ESMTP listen address")
	dir := flag.String("dir", "customspool-data", "directory for the data and meta spools")
	hold := flag.Bool("hold", false, "queue mail without delivering it")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *dir, *hold, func(addr string) { log.Printf("listening on %s", addr) }); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx ends. Loopback clients may relay (listener
// defaults); mail is queued in the file spools and delivered by MX.
func run(ctx context.Context, listen, dir string, hold bool, ready func(addr string)) error {
	data, err := OpenFileSpool(filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	meta, err := OpenFileSpool(filepath.Join(dir, "meta"))
	if err != nil {
		data.Close()
		return err
	}
	srv, err := mta.New(mta.Options{DataSpool: data, MetaSpool: meta, HoldDelivery: hold})
	if err != nil {
		data.Close()
		meta.Close()
		return err
	}
	addr, err := srv.ListenSMTP(listener.Config{Addr: listen})
	if err != nil {
		srv.Close()
		return fmt.Errorf("customspool: %w", err)
	}
	ready(addr.String())
	<-ctx.Done()
	return srv.Shutdown(context.Background())
}
