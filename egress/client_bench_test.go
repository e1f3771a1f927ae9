package egress_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
)

// BenchmarkSend measures transactions per second over one reused
// connection to the sink on 127.0.0.1: a 2 KiB message to one recipient.
func BenchmarkSend(b *testing.B) {
	sink := startSink(b, smtpsink.Options{})
	c := dial(b, sinkOptions(b, sink))
	data := append(message("bench"), bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"), 30)...)
	data = data[:2048-2]
	data = append(data, '\r', '\n')
	env := egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: data}
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := c.Send(ctx, env)
		if err != nil {
			b.Fatal(err)
		}
		if !res.Recipients[0].Success() {
			b.Fatalf("refused: %s", res.Recipients[0])
		}
	}
	b.StopTimer()
	if got := sink.Count(); got != c.Deliveries() {
		b.Errorf("sink accepted %d of %d", got, c.Deliveries())
	}
	b.ReportMetric(float64(c.Deliveries())/b.Elapsed().Seconds(), "msgs/s")
}
