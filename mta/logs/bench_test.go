package logs

import (
	"bytes"
	"encoding/json"
	"sync/atomic"
	"testing"
)

// BenchmarkLocalLog measures Log throughput for a typical Reception
// record, from many goroutines (RunParallel) and from one. The time
// includes Close, so the writer goroutine has caught up: records/s is
// what the sink sustains, not just how fast records are queued.
func BenchmarkLocalLog(b *testing.B) {
	modes := []struct {
		name string
		cfg  LocalConfig
	}{
		{"zstd", LocalConfig{}},
		{"plain", LocalConfig{Uncompressed: true}},
	}
	for _, m := range modes {
		for _, parallel := range []bool{true, false} {
			name := m.name + "/serial"
			if parallel {
				name = m.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				cfg := m.cfg
				cfg.LogDir = b.TempDir()
				l, err := OpenLocal(cfg)
				if err != nil {
					b.Fatal(err)
				}
				// Distinct records (ids, recipients, times), so the
				// compression ratio is not flattered by repetition.
				recs := makeRecords(4096)
				b.SetBytes(int64(len(mustJSON(b, recs[0])) + 1))
				var next atomic.Uint64
				b.ReportAllocs()
				b.ResetTimer()
				if parallel {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							rec := recs[next.Add(1)%uint64(len(recs))]
							if err := l.Log(rec); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					i := 0
					for b.Loop() {
						if err := l.Log(recs[i%len(recs)]); err != nil {
							b.Fatal(err)
						}
						i++
					}
				}
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// BenchmarkEncode measures the JSON encoding Log does on the caller's
// goroutine, against encoding/json for the same output.
func BenchmarkEncode(b *testing.B) {
	rec := receptionRecord(1)
	b.Run("appendRecord", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 2048)
		for b.Loop() {
			var err error
			if buf, err = encodeLine(buf[:0], rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		for b.Loop() {
			buf.Reset()
			w := referenceForm(rec)
			if err := enc.Encode(&w); err != nil {
				b.Fatal(err)
			}
		}
	})
}
