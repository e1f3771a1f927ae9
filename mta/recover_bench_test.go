package mta_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// BenchmarkRecovery measures New on a badger spool pair holding 50 000
// queued messages (MTAKIT_BENCH_RECOVER to change), with the meta an ESMTP
// reception writes (session, TLS, tenant and campaign, two log headers):
// the start-up cost of recovering a large queue. MTAKIT_BENCH_RECOVER_DIR
// keeps the spool in that directory, and reuses it if it is there.
//
//	go test -run '^$' -bench Recovery -benchtime 3x ./mta/
func BenchmarkRecovery(b *testing.B) {
	n := 50000
	if s := os.Getenv("MTAKIT_BENCH_RECOVER"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 || n%100 != 0 {
			b.Fatalf("MTAKIT_BENCH_RECOVER=%q: want a multiple of 100", s)
		}
	}
	dir := b.TempDir()
	if d := os.Getenv("MTAKIT_BENCH_RECOVER_DIR"); d != "" {
		// Kept for other runs; filled only when it is new.
		dir = d
		if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
			recoverOnly(b, dir, n)
			return
		}
	}
	data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := mta.New(mta.Options{DataSpool: data, MetaSpool: meta, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b),
		LogHeaders: []string{"Subject", "Message-ID"}})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("From: a@example.com\r\nSubject: Offer for you\r\nMessage-ID: <1234.5678@sender.example>\r\n\r\nbody\r\n")
	for i := 0; i < n; i += 100 {
		rcpts := make([]string, 100)
		for j := range rcpts {
			rcpts[j] = fmt.Sprintf("user%d@domain%d.example", i+j, j%50)
		}
		if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "bounce-1@sender.example", Recipients: rcpts, Data: body,
			Meta: map[string]any{
				mta.MetaReceptionProtocol: "ESMTP", mta.MetaReceivedFrom: fmt.Sprintf("127.0.0.1:%d", 1024+i/100%60000), mta.MetaReceivedVia: "127.0.0.1:2525",
				mta.MetaHostname: "mx.test", mta.MetaEHLODomain: "client.test", mta.MetaTLSCipher: "TLS_AES_128_GCM_SHA256", mta.MetaTLSVersion: "TLSv1.3",
				mta.MetaTenant: fmt.Sprintf("tenant-%d", i/100%10), mta.MetaCampaign: fmt.Sprintf("campaign-%d", i/100%7),
			}}); err != nil {
			b.Fatal(err)
		}
	}
	srv.Close()
	recoverOnly(b, dir, n)
}

// recoverOnly measures New on the spool in dir, which holds n messages.
func recoverOnly(b *testing.B, dir string, n int) {
	b.ResetTimer()
	for range b.N {
		data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		start, cpu := time.Now(), cpuTime()
		srv, err := mta.New(mta.Options{DataSpool: data, MetaSpool: meta, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b)})
		if err != nil {
			b.Fatal(err)
		}
		// CPU time as well as the rate: on a shared machine it varies less.
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
		b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(n), "cpu-µs/msg")
		if srv.QueuedCount() != n {
			b.Fatalf("recovered %d", srv.QueuedCount())
		}
		srv.Close()
	}
}
