package mta_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/listener"
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
	sink, addr := startRelayBench(b, loopbackShaper(0, nil), listener.Config{Addr: "127.0.0.1:0", BatchHandling: mode})
	line := strings.Repeat("y", 76) + "\r\n"
	body := []byte("From: a@example.com\r\nTo: list@example.net\r\nSubject: bench\r\n\r\n" + strings.Repeat(line, 2048/78))

	b.ResetTimer()
	start := time.Now()
	sendLoadTo(b, addr, conns, rcpts, [][]byte{body})
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
