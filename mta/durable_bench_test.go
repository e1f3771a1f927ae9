package mta_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// BenchmarkReceptionLog is BenchmarkReception with a KumoMTA log
// (zstd segments on the same disk as the spool): sync=off is the default
// (records reach the file within the 1 s flush interval), sync=on is
// LocalConfig.SyncReception (each 250 waits for its Reception record's
// fsync, shared by concurrent receptions). With 10 connections the
// fsyncs are shared; with 1 every message pays its own, the worst case.
// Compare the two in one run:
//
//	go test -run '^$' -bench ReceptionLog -benchtime 3000x -count 3 ./mta/
func BenchmarkReceptionLog(b *testing.B) {
	for _, conns := range []int{10, 1} {
		for _, sync := range []bool{false, true} {
			name := fmt.Sprintf("conns=%d/sync=off", conns)
			if sync {
				name = fmt.Sprintf("conns=%d/sync=on", conns)
			}
			b.Run(name, func(b *testing.B) { benchReceptionLog(b, conns, sync) })
		}
	}
}

func benchReceptionLog(b *testing.B, conns int, sync bool) {
	dir := b.TempDir()
	data, meta, err := badgerspool.OpenPair(dir+"/spool", badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	local, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir + "/logs", SyncReception: sync, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := mta.New(mta.Options{Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Log: local,
		LogHeaders: []string{"Subject"}, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b)})
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
	sendLoad(b, addr.String(), conns, [][]byte{body})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if got := srv.QueuedCount(); got != b.N {
		b.Fatalf("queued %d, want %d", got, b.N)
	}
}
