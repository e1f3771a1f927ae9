package smtpd

import (
	"bufio"
	"io"
	"io/ioutil"
	"strings"
	"testing"
)

func TestDataReader(t *testing.T) {
	// See RFC 5321 section 4.5.2: a line starting with a period followed by
	// other characters loses only its first period, and the data ends at the
	// first <CRLF>.<CRLF>.
	cases := []struct {
		name, in, data, rest string
	}{
		{"plain", "Hey <3\r\n.\r\nNOOP\r\n", "Hey <3\r\n", "NOOP\r\n"},
		{"empty", ".\r\nNOOP\r\n", "", "NOOP\r\n"},
		{"dot-stuffed", "..\r\n..Hey\r\n.\r\n", ".\r\n.Hey\r\n", ""},
		{"bare CR in a line", "Hey\r <3\r\n.\r\n", "Hey\r <3\r\n", ""},
		{"<CRLF>.<CR>X", "Hey\r\n.\rX\r\n.\r\n", "Hey\r\n\rX\r\n", ""},
		{"first line .<CR>X", ".\rX\r\n.\r\n", "\rX\r\n", ""},
		{"<CRLF>.<CR><CRLF>", "Hey\r\n.\r\r\n.\r\nNOOP\r\n", "Hey\r\n\r\r\n", "NOOP\r\n"},
		{"<CRLF>.<CR>.<CRLF>", "Hey\r\n.\r.\r\n.\r\n", "Hey\r\n\r.\r\n", ""},
		{"<CR><CRLF>.<CRLF>", "Hey\r\r\n.\r\nNOOP\r\n", "Hey\r\r\n", "NOOP\r\n"},
		{"<LF>.<CRLF>", "Hey\n.\r\n.\r\n", "Hey\n.\r\n", ""},
		{"<CRLF>.<LF>", "Hey\r\n.\n.\r\n.\r\n", "Hey\r\n\n.\r\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A one-byte buffer puts every pair of bytes across two reads.
			for _, size := range []int{4096, 1} {
				br := bufio.NewReader(strings.NewReader(tc.in))
				r := &dataReader{r: br}

				var data []byte
				buf := make([]byte, size)
				for {
					n, err := r.Read(buf)
					data = append(data, buf[:n]...)
					if err == io.EOF {
						break
					} else if err != nil {
						t.Fatalf("Read() = %v (data so far %q)", err, data)
					}
				}
				if string(data) != tc.data {
					t.Errorf("buffer size %v: got data %q, want %q", size, data, tc.data)
				}
				rest, _ := ioutil.ReadAll(br)
				if string(rest) != tc.rest {
					t.Errorf("buffer size %v: got %q after the data, want %q", size, rest, tc.rest)
				}
			}
		})
	}
}

// BenchmarkDataReader reads a 1 MiB message of 78-byte lines, with some
// dot-stuffed, through the DATA reader in 32 KiB reads.
//
//	go test -run '^$' -bench DataReader ./internal/smtpd/
func BenchmarkDataReader(b *testing.B) {
	var msg strings.Builder
	for i := 0; msg.Len() < 1<<20; i++ {
		if i%50 == 0 {
			msg.WriteString("..")
		}
		msg.WriteString(strings.Repeat("x", 76) + "\r\n")
	}
	msg.WriteString(".\r\n")
	in := msg.String()
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r := &dataReader{r: bufio.NewReaderSize(strings.NewReader(in), 4096)}
		for {
			if _, err := r.Read(buf); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
