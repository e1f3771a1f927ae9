package mta_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// BenchmarkRecipients measures end-to-end relay of 2 KB messages with 10
// recipients each (one domain) over 20 connections into a durable badger
// spool pair and on to a counting sink, until every recipient is at the
// sink, for both batch handlings. b.N counts messages.
//
//	go test -run '^$' -bench Recipients -benchtime 1000x ./mta/
func BenchmarkRecipients(b *testing.B) {
	for _, mode := range []listener.BatchHandling{listener.BifurcateAlways, listener.BatchByDomain} {
		b.Run("batch="+string(mode), func(b *testing.B) { benchRecipients(b, mode, 10) })
	}
}

func benchRecipients(b *testing.B, mode listener.BatchHandling, rcpts int) {
	const conns = 20
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	dir := b.TempDir()
	data, meta, err := badgerspool.OpenPair(dir+"/spool", badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	records, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir + "/logs", Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	list := []string{sink.Addr()}
	srv, err := mta.New(mta.Options{
		Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Log: records, Logger: quietLogger(),
		Resolver: testResolver(b),
		Shaper:   loopbackShaper(0, nil),
		Policy: mta.Policy{QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{Protocol: mta.Protocol{MXList: list}}, nil
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0", BatchHandling: mode})
	if err != nil {
		b.Fatal(err)
	}
	line := strings.Repeat("y", 76) + "\r\n"
	body := []byte("From: a@example.com\r\nTo: list@example.net\r\nSubject: bench\r\n\r\n" + strings.Repeat(line, 2048/78))

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		n := b.N/conns + btoi(c < b.N%conns)
		wg.Go(func() {
			cl, err := smtp.Dial(addr.String())
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			to := make([]string, rcpts)
			for i := range n {
				for r := range to {
					to[r] = fmt.Sprintf("c%d-m%d-r%d@example.net", c, i, r)
				}
				if err := cl.SendMail("a@example.com", to, bytes.NewReader(body)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	accepted := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	want := b.N
	if mode == listener.BifurcateAlways {
		want *= rcpts // one transaction per recipient
	}
	if err := sink.WaitCount(ctx, want); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)/el, "msgs/s")
	b.ReportMetric(float64(b.N*rcpts)/el, "rcpts/s")
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
