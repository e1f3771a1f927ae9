package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// dialTLS connects to addr and, when useTLS is set, upgrades with
// STARTTLS, then says EHLO. Replies are read with a short deadline, so a
// server that is still reading message data fails the test quickly.
func dialTLS(t *testing.T, addr string, useTLS bool) (net.Conn, *textproto.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	tp := textproto.NewConn(c)
	expectReply(t, tp, 220)
	if useTLS {
		sendLines(t, c, "EHLO c.test")
		expectReply(t, tp, 250)
		sendLines(t, c, "STARTTLS")
		expectReply(t, tp, 220)
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		c, tp = tc, textproto.NewConn(tc)
	}
	sendLines(t, c, "EHLO c.test")
	expectReply(t, tp, 250)
	return c, tp
}

func sendLines(t *testing.T, c net.Conn, raw string) {
	t.Helper()
	if _, err := io.WriteString(c, raw+"\r\n"); err != nil {
		t.Fatal(err)
	}
}

func expectReply(t *testing.T, tp *textproto.Conn, code int) string {
	t.Helper()
	got, msg, err := tp.ReadResponse(0)
	if got != code {
		t.Fatalf("got reply %d %q (%v), want %d", got, msg, err, code)
	}
	return msg
}

// tlsConfig is a self-signed server configuration for STARTTLS tests.
func tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := SelfSignedPEM("mx.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// A line of message data that starts with ".<CR>" is handled as RFC 5321
// section 4.5.2 says: only the period goes, so the CR stays and the
// message is refused as holding a bare CR (never stored with the CR
// silently dropped, as go-smtp v0.25.1 did), and "<CR><CR><LF>" ends its
// line, so the "." line after it ends the data and a pipelined command
// after that is a command. Plain dot-stuffing is unchanged. The same over
// STARTTLS, where go-smtp reads through its own TLS connection.
func TestDotCRVariants(t *testing.T) {
	const head = "Subject: dot\r\n\r\nline1\r\n"
	tests := []struct {
		name string
		data string // sent after the 354, up to and including the end of data
		want string // data stored; "" when refused
	}{
		{"dot CR X", head + ".\rX\r\nline3\r\n.\r\n", ""},
		{"dot CR X first line", ".\rX\r\n.\r\n", ""},
		{"dot CR CRLF", head + ".\r\r\n.\r\n", ""},
		{"CR CRLF", head + "x\r\r\n.\r\n", ""},
		{"dot CR just before dot CRLF", head + ".\r.\r\n.\r\n", ""},
		{"dot-stuffing", head + "..\r\n..x\r\n.\r\n", head + ".\r\n.x\r\n"},
	}
	cfg := Config{Domains: fuzzDomains, TLS: tlsConfig(t)}
	for _, useTLS := range []bool{false, true} {
		for _, tc := range tests {
			name := tc.name
			if useTLS {
				name += "/STARTTLS"
			}
			t.Run(name, func(t *testing.T) {
				h := &memHandler{}
				addr := startTCP(t, cfg, h)
				c, tp := dialTLS(t, addr, useTLS)
				sendLines(t, c, "MAIL FROM:<a@x.test>")
				expectReply(t, tp, 250)
				sendLines(t, c, "RCPT TO:<b@relay.test>")
				expectReply(t, tp, 250)
				sendLines(t, c, "DATA")
				expectReply(t, tp, 354)

				// A complete second transaction is pipelined right after
				// the end of data: it must be taken as commands.
				if _, err := io.WriteString(c, tc.data+
					"MAIL FROM:<second@x.test>\r\nRCPT TO:<b@relay.test>\r\nDATA\r\n"); err != nil {
					t.Fatal(err)
				}
				code, msg, _ := tp.ReadResponse(0)
				if tc.want == "" && (code != 552 || !strings.Contains(msg, "bare CR or LF")) {
					t.Fatalf("end of data answered %d %q, want the 552 bare CR refusal", code, msg)
				}
				if tc.want != "" && code != 250 {
					t.Fatalf("end of data answered %d %q, want 250", code, msg)
				}
				expectReply(t, tp, 250) // MAIL
				expectReply(t, tp, 250) // RCPT
				expectReply(t, tp, 354) // DATA
				sendLines(t, c, "Subject: second\r\n\r\nok\r\n.")
				expectReply(t, tp, 250)

				h.mu.Lock()
				defer h.mu.Unlock()
				var got []string
				for _, m := range h.msgs {
					got = append(got, m.Sender+": "+string(m.Data))
				}
				want := []string{"second@x.test: Subject: second\r\n\r\nok\r\n"}
				if tc.want != "" {
					want = append([]string{"a@x.test: " + tc.want}, want...)
				}
				if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
					t.Fatalf("stored %q\nwant   %q", got, want)
				}
			})
		}
	}
}

// orderedHandler makes the Data call of a BDAT transaction aborted by RSET
// finish while the next BDAT transaction's handler is running: its refusal
// is logged only once the next message is being stored, and the next
// message is stored only after that.
type orderedHandler struct {
	memHandler
	storing    chan struct{} // closed when HandleMessage starts
	refused    chan struct{} // closed when LogRejection returns
	once       sync.Once
	refuseOnce sync.Once
}

func (h *orderedHandler) HandleMessage(ctx context.Context, m *Message) ([]string, error) {
	h.once.Do(func() { close(h.storing) })
	<-h.refused
	// Let the aborted Data call hand back its result first.
	time.Sleep(100 * time.Millisecond)
	return h.memHandler.HandleMessage(ctx, m)
}

func (h *orderedHandler) LogRejection(info *SessionInfo, sender string, rcpts []string, resp *smtp.SMTPError) {
	<-h.storing
	h.memHandler.LogRejection(info, sender, rcpts, resp)
	h.refuseOnce.Do(func() { close(h.refused) })
}

// The reply to a BDAT transaction is its own, even when the Data call of a
// transaction aborted by RSET ends while it is running (go-smtp v0.25.1
// handed that call's result, here a 552, to the next transaction, whose
// message was stored all the same).
func TestBDATAfterResetGetsItsOwnReply(t *testing.T) {
	h := &orderedHandler{storing: make(chan struct{}), refused: make(chan struct{})}
	addr := startTCP(t, Config{Domains: fuzzDomains}, h)
	c, tp := dialTLS(t, addr, false)
	// The first chunk's bare LF is refused by Data on its own goroutine,
	// which then waits in LogRejection.
	sendLines(t, c, "MAIL FROM:<bdat@x.test>\r\nRCPT TO:<first@relay.test>\r\nBDAT 3\r\na\nbRSET")
	codes := readReplies(t, tp, 4)
	if codes[0] != 250 || codes[1] != 250 || codes[3] != 250 {
		t.Fatalf("replies %v", codes)
	}
	const msg = "Subject: second\r\n\r\nok\r\n"
	sendLines(t, c, fmt.Sprintf("MAIL FROM:<data@x.test>\r\nRCPT TO:<second@relay.test>\r\nBDAT %d LAST\r\n%sNOOP", len(msg), msg))
	expectReply(t, tp, 250)
	expectReply(t, tp, 250)
	code, text, _ := tp.ReadResponse(0)
	if code != 250 || !strings.Contains(text, "ids=") {
		t.Errorf("BDAT LAST answered %d %q, want its own 250 ids=", code, text)
	}
	expectReply(t, tp, 250) // NOOP: in step

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) != 1 || h.msgs[0].Sender != "data@x.test" || string(h.msgs[0].Data) != msg {
		t.Errorf("stored %+v", h.msgs)
	}
	if len(h.rejected) != 1 || h.rejected[0].sender != "bdat@x.test" || h.rejected[0].code != 552 {
		t.Errorf("rejections %+v", h.rejected)
	}
}

// A connection that ends right after "BDAT 0" ends cleanly: the message's
// Data call sees the transfer aborted (go-smtp v0.25.1 often called Data
// on the already cleared Session instead, and recovered from the panic).
func TestBDATThenDisconnect(t *testing.T) {
	var logs lockedBuffer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := NewWithListener(Config{Hostname: "mx.test", Domains: fuzzDomains}, &memHandler{}, log, ln)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Serve() }()
	defer func() { l.Close(); <-done }()

	const conns = 20
	for range conns {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nBDAT 0\r\n")
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadAll(bufio.NewReader(c)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// Each Data call logs the aborted read, or go-smtp logs its panic.
	var aborted, panics int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s := logs.String()
		aborted = strings.Count(s, "data read failed")
		panics = strings.Count(s, "panic serving")
		if aborted+panics >= conns || time.Now().After(deadline) {
			break
		}
	}
	if panics != 0 || aborted != conns {
		t.Fatalf("%d Data calls saw the abort, %d panicked; want %d and 0:\n%s", aborted, panics, conns, logs.String())
	}
}
