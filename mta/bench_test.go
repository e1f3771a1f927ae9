package mta_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// BenchmarkReception measures SMTP reception into a durable badger spool:
// 10 concurrent connections, 2 KB messages, one recipient each. Every
// message is acknowledged only after data and meta are fsynced.
//
//	go test -run '^$' -bench Reception -benchtime 5000x ./mta/
func BenchmarkReception(b *testing.B) {
	const conns = 10
	dir := b.TempDir()
	data, meta, err := badgerspool.OpenPair(dir+"/spool", badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	// Delivery is held: this measures reception alone.
	srv, err := mta.New(mta.Options{Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b)})
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

// BenchmarkEndToEnd measures relaying: 20 sender connections inject
// messages of 1–10 KB into mtakit (durable badger spool, KumoMTA log
// segments), which delivers them over SMTP to a counting sink on loopback.
// msgs/s is measured when the sink has accepted every message. The
// shaper is a Go function, or KumoMTA's community shaping.toml with a
// local override of high limits (its lookups, throttles and automation
// rules in the path, none of them binding).
//
//	go test -run '^$' -bench EndToEnd -benchtime 5000x ./mta/
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("shaper=func", func(b *testing.B) { benchEndToEnd(b, loopbackShaper(0, nil)) })
	b.Run("shaper=shaping.toml", func(b *testing.B) {
		override := shaping.File{Name: "local.toml", Data: []byte(`
["default"]
prohibited_hosts = []
connection_limit = 32
max_message_rate = "1000000/s"
idle_timeout = "200ms"
`)}
		res := testResolver(b)
		sh, err := shaping.Load(context.Background(), shaping.Options{LookupMX: res.MXHostNames, SiteName: egress.SiteName, Logger: quietLogger()},
			shaping.DefaultFile(), override)
		if err != nil {
			b.Fatal(err)
		}
		benchEndToEnd(b, sh)
	})
}

func benchEndToEnd(b *testing.B, shaper shaping.Shaper) {
	const conns = 20
	sink, addr := startRelayBench(b, shaper, listener.Config{Addr: "127.0.0.1:0"})
	line := strings.Repeat("y", 76) + "\r\n"
	bodies := make([][]byte, 10)
	for i := range bodies {
		bodies[i] = []byte("From: a@example.com\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n" + strings.Repeat(line, (i+1)*1024/78))
	}

	b.ResetTimer()
	start := time.Now()
	sendLoad(b, addr, conns, bodies)
	accepted := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := sink.WaitCount(ctx, b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
}

// startRelayBench starts a counting sink and a server that relays to it
// from a durable badger spool pair with zstd logs, listening as lc says.
// Both stop when b ends.
func startRelayBench(b *testing.B, shaper shaping.Shaper, lc listener.Config) (*smtpsink.Sink, string) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
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
		Shaper:   shaper,
		Policy: mta.Policy{QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{Protocol: mta.Protocol{MXList: list}}, nil
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	addr, err := srv.ListenSMTP(lc)
	if err != nil {
		b.Fatal(err)
	}
	return sink, addr.String()
}

// sendLoad sends b.N one-recipient messages over conns concurrent SMTP
// connections, cycling through bodies, and fails b on the first error.
func sendLoad(b *testing.B, addr string, conns int, bodies [][]byte) {
	sendLoadTo(b, addr, conns, 1, bodies)
}

// sendLoadTo is sendLoad with rcpts distinct recipients per message.
func sendLoadTo(b *testing.B, addr string, conns, rcpts int, bodies [][]byte) {
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := 0; c < conns; c++ {
		n := b.N / conns
		if c < b.N%conns {
			n++
		}
		wg.Go(func() {
			cl, err := smtp.Dial(addr)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Hello("bench.test"); err != nil {
				errs <- err
				return
			}
			to := make([]string, rcpts)
			for i := 0; i < n; i++ {
				for r := range to {
					to[r] = fmt.Sprintf("c%d-m%d-r%d@example.net", c, i, r)
				}
				if err := cl.SendMail("a@example.com", to, bytes.NewReader(bodies[(c+i)%len(bodies)])); err != nil {
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
}

// BenchmarkReception1Conn measures the per-message latency a lonely sender
// sees: one client, 2 KB messages, one recipient, into the durable badger
// spool pair, as Postfix's `smtp-source -s 1` sends them (a new connection
// per message: connect, EHLO, MAIL, RCPT, DATA, QUIT) and over one reused
// connection. With relay=sink the server also delivers every message to a
// counting sink on loopback, so delivery's loads and removals compete with
// reception as in the load harness; otherwise delivery is held. ns/op is
// the latency of one message; p50/p99/p999 are of MAIL FROM to the 250
// after the final dot.
//
//	go test -run '^$' -bench Reception1Conn -benchtime 3000x ./mta/
func BenchmarkReception1Conn(b *testing.B) {
	for _, relay := range []bool{false, true} {
		for _, reconnect := range []bool{true, false} {
			name := fmt.Sprintf("relay=%v/reconnect=%v", map[bool]string{false: "held", true: "sink"}[relay], reconnect)
			b.Run(name, func(b *testing.B) { benchReception1Conn(b, relay, reconnect) })
		}
	}
}

func benchReception1Conn(b *testing.B, relay, reconnect bool) {
	dir := b.TempDir()
	data, meta, err := badgerspool.OpenPair(dir+"/spool", badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	opts := mta.Options{Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Logger: quietLogger(), Resolver: testResolver(b)}
	var sink *smtpsink.Sink
	if relay {
		if sink, err = smtpsink.Start(smtpsink.Options{}); err != nil {
			b.Fatal(err)
		}
		defer sink.Close()
		list := []string{sink.Addr()}
		opts.Shaper = loopbackShaper(0, nil)
		opts.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{Protocol: mta.Protocol{MXList: list}}, nil
		}
	} else {
		opts.HoldDelivery = true
	}
	srv, err := mta.New(opts)
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
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	var cl *smtp.Client
	for i := range b.N {
		if cl == nil {
			if cl, err = smtp.Dial(addr.String()); err != nil {
				b.Fatal(err)
			}
			if err := cl.Hello("bench.test"); err != nil {
				b.Fatal(err)
			}
		}
		t0 := time.Now()
		if err := cl.SendMail("a@example.com", []string{fmt.Sprintf("r%d@example.net", i)}, bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		if reconnect {
			if err := cl.Quit(); err != nil {
				b.Fatal(err)
			}
			cl = nil
		}
	}
	if cl != nil {
		cl.Quit()
	}
	if relay {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := sink.WaitCount(ctx, b.N); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	for _, p := range []float64{50, 99, 99.9} {
		i := min(len(lat)-1, int(math.Ceil(p/100*float64(len(lat))))-1)
		b.ReportMetric(float64(lat[max(i, 0)].Microseconds())/1000, fmt.Sprintf("p%v-ms", strings.ReplaceAll(fmt.Sprint(p), ".", "")))
	}
	if !relay {
		if got := srv.QueuedCount(); got != b.N {
			b.Fatalf("queued %d, want %d", got, b.N)
		}
	}
}
