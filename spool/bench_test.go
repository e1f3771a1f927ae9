package spool_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mtakit/mtakit/spool"
)

// BenchmarkStore measures durable Store throughput for 2 KiB values (a
// typical message) with 1 and 10 concurrent writers, as SMTP sessions
// would issue them. For Badger, concurrency is what group commit turns into
// throughput.
func BenchmarkStore(b *testing.B) {
	impls := []struct {
		name string
		open func(b *testing.B) spool.Spool
	}{
		{"Memory", func(*testing.B) spool.Spool { return spool.NewMemory() }},
	}
	for _, impl := range impls {
		for _, writers := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/writers=%d", impl.name, writers), func(b *testing.B) {
				s := impl.open(b)
				defer s.Close()
				benchStore(b, s, writers, 2048)
			})
		}
	}
}

func benchStore(b *testing.B, s spool.Spool, writers, size int) {
	ctx := context.Background()
	value := make([]byte, size)
	var left atomic.Int64
	left.Store(int64(b.N))
	b.SetBytes(int64(size))
	b.ResetTimer()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := s.Store(ctx, spool.NewID(), value); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
