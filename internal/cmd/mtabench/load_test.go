package main

import (
	"context"
	"testing"
	"time"

	"github.com/mtakit/mtakit/internal/smtpsink"
)

// drive against a real sink: every recipient of every message arrives,
// -reconnect opens one connection per message, and -rate paces the run.
func TestDrive(t *testing.T) {
	for _, c := range []struct {
		name      string
		conns     int
		rcpts     int
		reconnect bool
		rate      float64
	}{
		{"reused", 3, 1, false, 0},
		{"rcpts", 2, 10, false, 0},
		{"reconnect", 1, 3, true, 0},
		{"paced", 2, 1, false, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink, err := smtpsink.Start(smtpsink.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			const n = 30
			start := time.Now()
			lr := drive(loadSpec{Addr: sink.Addr(), N: n, Size: 2048, Conns: c.conns, Rcpts: c.rcpts, Reconnect: c.reconnect,
				Rate: c.rate, RunID: c.name, Deadline: time.Now().Add(30 * time.Second)})
			took := time.Since(start)
			if lr.Accepted != n || lr.Failed != 0 || lr.TimedOut || len(lr.Latencies) != n {
				t.Fatalf("accepted %d, failed %d, timed out %v, %d latencies: %v", lr.Accepted, lr.Failed, lr.TimedOut, len(lr.Latencies), lr.Errors)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := sink.WaitRecipients(ctx, n*c.rcpts); err != nil {
				t.Fatal(err)
			}
			st := sink.Stats()
			if st.Messages != n || st.Recipients != int64(n*c.rcpts) || st.Duplicates != 0 {
				t.Errorf("sink: %d messages, %d recipients, %d duplicates; want %d, %d, 0", st.Messages, st.Recipients, st.Duplicates, n, n*c.rcpts)
			}
			wantConns := int64(c.conns)
			if c.reconnect {
				wantConns = n
			}
			if st.Connections != wantConns {
				t.Errorf("%d connections, want %d", st.Connections, wantConns)
			}
			if c.rate > 0 {
				if min := time.Duration(float64(n-1) / c.rate * float64(time.Second)); took < min {
					t.Errorf("paced at %v msgs/s, %d messages took %v, want at least %v", c.rate, n, took, min)
				}
			}
		})
	}
}
