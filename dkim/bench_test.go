package dkim

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
)

// benchMessage returns a realistic message of about size bytes: a dozen
// header fields and a quoted-printable-like text body.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Received: from client.example (client.example [192.0.2.10]) by mta.example.com with ESMTP id 1a2b3c; Tue, 1 Jul 2025 10:00:00 +0000\r\n")
	b.WriteString("From: \"Example News\" <news@example.com>\r\n")
	b.WriteString("To: recipient@example.net\r\n")
	b.WriteString("Subject: Your weekly digest\r\n")
	b.WriteString("Date: Tue, 1 Jul 2025 10:00:00 +0000\r\n")
	b.WriteString("Message-ID: <20250701100000.1a2b3c@example.com>\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n")
	b.WriteString("List-Unsubscribe: <https://example.com/u/1a2b3c>, <mailto:unsub@example.com>\r\n")
	b.WriteString("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
	b.WriteString("\r\n")
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor=\r\n"
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%04d ", i)
		b.WriteString(line)
	}
	return b.Bytes()
}

// distinctMessages returns n copies of msg that differ in their
// Message-ID, so that no two have the same signature digest (which the
// signer would not compute twice, see memoSigner).
func distinctMessages(msg []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Replace(msg, []byte("<20250701100000."), fmt.Appendf(nil, "<%08d.", i), 1)
	}
	return out
}

// BenchmarkSign measures signatures per second on a 10 KB message with
// the default header list and over-signing (the configuration of
// KumoMTA's example dkim_data.toml). "serial" is one goroutine; "parallel"
// uses GOMAXPROCS goroutines, the throughput of a loaded server. Every
// message signed is distinct. "rcpts10" signs each message for ten
// recipients, as BifurcateAlways does: ten copies that differ only in an
// unsigned Received field; it reports messages (of ten signatures) per
// second.
//
//	go test -run '^$' -bench Sign -benchtime 3s ./dkim/
func BenchmarkSign(b *testing.B) {
	msgs := distinctMessages(benchMessage(10*1024), 1024)
	for _, name := range []string{"rsa2048", "ed25519"} {
		s, err := NewSigner(Options{Domain: "example.com", Selector: "s1", Key: testKey(b, name), OverSign: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/serial", func(b *testing.B) {
			b.SetBytes(int64(len(msgs[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.Sign(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.SetBytes(int64(len(msgs[0])))
			b.ReportAllocs()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign(msgs[next.Add(1)%int64(len(msgs))]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
		})
		b.Run(name+"/rcpts10", func(b *testing.B) {
			i := 0
			for b.Loop() {
				msg := msgs[i%len(msgs)]
				i++
				for r := range 10 {
					copy := append(fmt.Appendf(nil, "Received: for <r%d@example.net>\r\n", r), msg...)
					if _, err := s.Sign(copy); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
