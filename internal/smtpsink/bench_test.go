package smtpsink

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// BenchmarkAccept measures raw acceptance: 10 concurrent go-smtp client
// connections send 2 KB single-recipient messages to a non-storing sink.
// It reports msgs/s (b.N messages over the timed part).
func BenchmarkAccept(b *testing.B) {
	benchmarkAccept(b, Options{}, 10, 2048)
}

// BenchmarkAcceptStore is BenchmarkAccept with Options.Store.
func BenchmarkAcceptStore(b *testing.B) {
	benchmarkAccept(b, Options{Store: true}, 10, 2048)
}

func benchmarkAccept(b *testing.B, opts Options, conns, size int) {
	s := startSink(b, opts)
	clients := make([]*smtp.Client, conns)
	for i := range clients {
		c, err := tryDial(s)
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	msg := testMessage("bench", size)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()

	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range clients {
		n := b.N / conns
		if i < b.N%conns {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if _, err := send(c, "bench@example.com", []string{"rcpt" + strconv.Itoa(i) + "@example.net"}, msg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.WaitCount(ctx, b.N); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	for _, c := range clients {
		_ = c.Quit()
	}
}
