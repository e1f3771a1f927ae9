package mta_test

import (
	"context"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// BenchmarkRecovery measures New on a badger spool pair holding 50 000
// queued messages (meta as reception writes it): the start-up cost of
// recovering a large queue.
//
//	go test -run '^$' -bench Recovery -benchtime 3x ./mta/
func BenchmarkRecovery(b *testing.B) {
	const n = 50000
	dir := b.TempDir()
	data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := mta.New(mta.Options{DataSpool: data, MetaSpool: meta, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b)})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
	for i := 0; i < n; i += 100 {
		rcpts := make([]string, 100)
		for j := range rcpts {
			rcpts[j] = "r@example.net"
		}
		if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "a@example.com", Recipients: rcpts, Data: body,
			Meta: map[string]any{"received_from": "127.0.0.1:45678", "received_via": "127.0.0.1:2525", "hostname": "mx.test", "ehlo_domain": "client.test"}}); err != nil {
			b.Fatal(err)
		}
	}
	srv.Close()
	b.ResetTimer()
	for range b.N {
		data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		srv, err := mta.New(mta.Options{DataSpool: data, MetaSpool: meta, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b)})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
		if srv.QueuedCount() != n {
			b.Fatalf("recovered %d", srv.QueuedCount())
		}
		srv.Close()
	}
}
