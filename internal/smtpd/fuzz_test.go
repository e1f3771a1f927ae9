package smtpd

// Not part of upstream.patch: go-smtp's go.mod predates fuzz tests.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// dotDecode is RFC 5321 section 4.5.2 written the slow and obvious way: the
// data ends at the first "<CRLF>.<CRLF>", the start of the data counting as
// the start of a line, and each line before it that starts with a period
// loses that period. ok is false when the input holds no end of data.
func dotDecode(in []byte) (data, rest []byte, ok bool) {
	s := append([]byte("\r\n"), in...)
	i := bytes.Index(s, []byte("\r\n.\r\n"))
	if i < 0 {
		return nil, nil, false
	}
	lines := bytes.Split(s[2:i+2], []byte("\r\n"))
	for j, line := range lines {
		lines[j] = bytes.TrimPrefix(line, []byte("."))
	}
	return bytes.Join(lines, []byte("\r\n")), s[i+5:], true
}

// FuzzDataReader checks the DATA reader against dotDecode, whatever the
// size of the reads: the same data, the end of data at the same place (the
// bytes after it left for the next command), and io.ErrUnexpectedEOF when
// the input ends first.
func FuzzDataReader(f *testing.F) {
	for _, s := range []string{
		"Hey <3\r\n.\r\nNOOP\r\n", ".\r\n", "..\r\n.\r\n", "a\r\n.\rX\r\n.\r\n",
		"a\r\n.\r\r\n.\r\nMAIL FROM:<a@b>\r\n", "a\r\n.\r.\r\n.\r\n", "a\r\r\n.\r\n",
		"a\n.\n.\r\n", ".\r", "a\r\n.", "\r\r\r\n..\r\r\n.\r\n",
	} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		wantData, wantRest, ok := dotDecode(in)
		br := bufio.NewReader(bytes.NewReader(in))
		r := &dataReader{r: br}
		buf := make([]byte, int(size)%7+1)
		var data []byte
		var err error
		for {
			var n int
			n, err = r.Read(buf)
			data = append(data, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !ok {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%q has no end of data, but Read returned %v with %q", in, err, data)
			}
			return
		}
		if err != io.EOF {
			t.Fatalf("%q: Read returned %v with %q, want %q", in, err, data, wantData)
		}
		if !bytes.Equal(data, wantData) {
			t.Fatalf("%q: got data %q, want %q", in, data, wantData)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, wantRest) {
			t.Fatalf("%q: %q left after the data, want %q", in, rest, wantRest)
		}
	})
}
