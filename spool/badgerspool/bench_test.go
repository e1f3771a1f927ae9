package badgerspool_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// BenchmarkStore measures durable Store throughput for 2 KiB values (a
// typical message) with 1 and 10 concurrent writers, as SMTP sessions
// would issue them: concurrency is what group commit turns into
// throughput.
func BenchmarkStore(b *testing.B) {
	for _, writers := range []int{1, 10} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s, err := badgerspool.Open(b.TempDir(), badgerspool.Options{ValueLogGCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			value := make([]byte, 2048)
			var left atomic.Int64
			left.Store(int64(b.N))
			b.SetBytes(int64(len(value)))
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
		})
	}
}
