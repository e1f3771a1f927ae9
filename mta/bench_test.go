package mta_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// BenchmarkReception measures SMTP reception into a durable badger spool:
// 10 concurrent connections, 2 KB messages, one recipient each. Every
// message is acknowledged only after data and meta are fsynced.
//
//	go test -run '^$' -bench Reception -benchtime 5000x ./mta/
func BenchmarkReception(b *testing.B) {
	const conns = 10
	dir := b.TempDir()
	data, err := spool.OpenBadger(dir+"/data", spool.BadgerOptions{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	meta, err := spool.OpenBadger(dir+"/meta", spool.BadgerOptions{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := mta.New(mta.Options{Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("From: a@example.com\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n" +
		strings.Repeat(strings.Repeat("x", 76)+"\r\n", 2048/78))

	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := 0; c < conns; c++ {
		n := b.N / conns
		if c < b.N%conns {
			n++
		}
		wg.Go(func() {
			cl, err := smtp.Dial(addr.String())
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Hello("bench.test"); err != nil {
				errs <- err
				return
			}
			for i := 0; i < n; i++ {
				if err := cl.SendMail("a@example.com", []string{fmt.Sprintf("r%d@example.net", i)}, bytes.NewReader(body)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if got := srv.QueuedCount(); got != b.N {
		b.Fatalf("queued %d, want %d", got, b.N)
	}
}
