package smtpsink

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const testTimeout = 10 * time.Second

func startSink(tb testing.TB, opts Options) *Sink {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// newClient connects to the sink without greeting (go-smtp's client reads
// the banner lazily, in Hello).
func newClient(tb testing.TB, s *Sink) *smtp.Client {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = testTimeout
	c.SubmissionTimeout = testTimeout
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// tryDial connects and says EHLO, for goroutines other than the test's.
// The caller closes the client.
func tryDial(s *Sink) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = testTimeout
	c.SubmissionTimeout = testTimeout
	if err := c.Hello("client.test"); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// dial connects and says EHLO.
func dial(tb testing.TB, s *Sink) *smtp.Client {
	tb.Helper()
	c := newClient(tb, s)
	if err := c.Hello("client.test"); err != nil {
		tb.Fatalf("Hello: %v", err)
	}
	return c
}

// dialTLS connects, does STARTTLS with the sink's generated CA, and says
// EHLO (which runs the handshake).
func dialTLS(tb testing.TB, s *Sink, timeout time.Duration) (*smtp.Client, error) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{RootCAs: s.RootCAs(), ServerName: "127.0.0.1"})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	tb.Cleanup(func() { _ = c.Close() })
	c.CommandTimeout = timeout
	c.SubmissionTimeout = timeout
	return c, c.Hello("client.test")
}

// testMessage builds a message of about size bytes with a Message-ID and an
// X-Test-Seq header.
func testMessage(id string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: test %s\r\n", id)
	fmt.Fprintf(&b, "Message-ID: <%s@test>\r\nX-Test-Seq: %s\r\n\r\n", id, id)
	line := "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
	for i := 0; b.Len()+len(line) <= size && i < 1<<20; i++ {
		b.WriteString(line)
	}
	return b.Bytes()
}

// send runs one transaction; it stops at the first error.
func send(c *smtp.Client, from string, to []string, data []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(data); err != nil {
		_, _ = w.CloseWithResponse()
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// smtpCode returns the reply code of an SMTP error, 0 for other errors.
func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wantConnError fails unless err is a non-SMTP (connection-level) error
// that is not a timeout.
func wantConnError(tb testing.TB, what string, err error) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("%s: no error, want a connection error", what)
	}
	if code := smtpCode(err); code != 0 {
		tb.Fatalf("%s: SMTP error %d (%v), want a connection error", what, code, err)
	}
	if isTimeout(err) {
		tb.Fatalf("%s: timeout (%v), want the connection closed", what, err)
	}
}
