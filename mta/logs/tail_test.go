package logs_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta/logs"
)

func TestTailFollowsOpenAndNewSegments(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("uncompressed=%v", plain), func(t *testing.T) {
			dir := t.TempDir()
			l, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir, Uncompressed: plain, FlushInterval: 50 * time.Millisecond, MaxFileSize: 2000})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			logN := func(from, to int) {
				for i := from; i < to; i++ {
					rec := &logs.Record{Type: logs.Delivery, ID: fmt.Sprintf("id%03d", i), Queue: "q"}
					rec.SetTimes(time.Now(), time.Now())
					if err := l.Log(rec); err != nil {
						t.Fatal(err)
					}
				}
			}
			logN(0, 5)
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			// Without Follow: what is there now, from the open segment.
			var once []string
			if err := logs.Tail(context.Background(), dir, logs.TailOptions{}, func(r *logs.Record) error {
				once = append(once, r.ID)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(once) != 5 {
				t.Fatalf("read %d records of the open segment, want 5", len(once))
			}

			ctx, cancel := context.WithCancel(context.Background())
			var mu sync.Mutex
			var got []string
			errc := make(chan error, 1)
			go func() {
				errc <- logs.Tail(ctx, dir, logs.TailOptions{Follow: true, Poll: 20 * time.Millisecond}, func(r *logs.Record) error {
					mu.Lock()
					got = append(got, r.ID)
					mu.Unlock()
					return nil
				})
			}()
			// Enough records to rotate segments several times (2000 bytes each).
			start := time.Now()
			logN(5, 60)
			wait := func(n int) time.Duration {
				deadline := time.Now().Add(5 * time.Second)
				for {
					mu.Lock()
					k := len(got)
					mu.Unlock()
					if k >= n {
						return time.Since(start)
					}
					if time.Now().After(deadline) {
						t.Fatalf("followed %d records, want %d", k, n)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			if d := wait(60); d > 2*time.Second {
				t.Errorf("records took %s to be readable", d)
			}
			segs, _ := logs.ListSegments(dir)
			if len(segs) < 3 {
				t.Errorf("%d segments; the test wants rotation", len(segs))
			}
			cancel()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 60 {
				t.Fatalf("got %d records, want 60", len(got))
			}
			for i, id := range got {
				if id != fmt.Sprintf("id%03d", i) {
					t.Fatalf("record %d is %s: out of order or repeated", i, id)
				}
			}
		})
	}
}
