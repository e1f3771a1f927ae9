package dkim

import (
	"bytes"
	"fmt"
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

// BenchmarkSign measures signatures per second on a 10 KB message with
// the default header list and over-signing (the configuration of
// KumoMTA's example dkim_data.toml). "serial" is one goroutine; "parallel"
// uses GOMAXPROCS goroutines, the throughput of a loaded server.
//
//	go test -run '^$' -bench Sign -benchtime 3s ./dkim/
func BenchmarkSign(b *testing.B) {
	msg := benchMessage(10 * 1024)
	for _, name := range []string{"rsa2048", "ed25519"} {
		s, err := NewSigner(Options{Domain: "example.com", Selector: "s1", Key: testKey(b, name), OverSign: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/serial", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign(msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
		})
	}
}
