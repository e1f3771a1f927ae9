package mta_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// memSink keeps the records a test server logs, for assertions.
type memSink = logs.Memory

// testServer is a running server on 127.0.0.1 with its spools.
type testServer struct {
	srv        *mta.Server
	addr       string
	data, meta spool.Spool
	sink       *memSink
}

type serverOpt func(*mta.Options, *listener.Config)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startServer(t *testing.T, data, meta spool.Spool, opts ...serverOpt) *testServer {
	t.Helper()
	ts := &testServer{data: data, meta: meta, sink: &memSink{}}
	// Delivery is held unless a test releases it, and DNS goes to an
	// in-process server: tests never leave loopback.
	o := mta.Options{
		Hostname:     "mx.test",
		DataSpool:    data,
		MetaSpool:    meta,
		Log:          ts.sink,
		Logger:       quietLogger(),
		HoldDelivery: true,
		Resolver:     testResolver(t),
	}
	cfg := listener.Config{Addr: "127.0.0.1:0"}
	for _, f := range opts {
		f(&o, &cfg)
	}
	srv, err := mta.New(o)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.ListenSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv, ts.addr = srv, addr.String()
	t.Cleanup(func() { srv.Close() })
	return ts
}

// testResolver returns a resolver that asks an in-process DNS server.
func testResolver(t testing.TB) *egress.Resolver {
	t.Helper()
	dns := dnstest.Start(t)
	r, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{dns.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rawConn is a line-level SMTP client for protocol tests.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	tp *textproto.Conn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawConn{t: t, c: c, tp: textproto.NewConn(c)}
	rc.expect(220)
	return rc
}

// send writes raw bytes (no CRLF added).
func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// cmd sends one command line and returns the reply.
func (rc *rawConn) cmd(line string) (int, string) {
	rc.t.Helper()
	rc.send(line + "\r\n")
	return rc.reply()
}

func (rc *rawConn) reply() (int, string) {
	rc.t.Helper()
	code, msg, err := rc.tp.ReadResponse(0)
	if err != nil {
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			rc.t.Fatalf("read reply: %v", err)
		}
		if code == 0 {
			rc.t.Fatalf("read reply: %v", err)
		}
	}
	return code, msg
}

func (rc *rawConn) expect(code int) string {
	rc.t.Helper()
	got, msg := rc.reply()
	if got != code {
		rc.t.Fatalf("got %d %q, want %d", got, msg, code)
	}
	return msg
}

func (rc *rawConn) expectCmd(line string, code int) string {
	rc.t.Helper()
	rc.send(line + "\r\n")
	return rc.expect(code)
}

// closed reports whether the server closed the connection.
func (rc *rawConn) closed() bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := bufio.NewReader(rc.tp.R).ReadByte()
	return err != nil
}

func testMessage(subject string, body string) string {
	return "From: sender@example.com\r\nTo: rcpt@example.net\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@example.com>\r\n\r\n" + body + "\r\n"
}

// sendMail runs one transaction over a raw connection and returns the IDs
// from the 250 reply.
func sendMail(t *testing.T, rc *rawConn, from string, to []string, msg string) []string {
	t.Helper()
	rc.expectCmd("MAIL FROM:<"+from+">", 250)
	for _, r := range to {
		rc.expectCmd("RCPT TO:<"+r+">", 250)
	}
	rc.expectCmd("DATA", 354)
	rc.send(msg + ".\r\n")
	text := rc.expect(250)
	ids, ok := strings.CutPrefix(text, "2.0.0 OK ids=")
	if !ok {
		t.Fatalf("250 reply %q lacks ids", text)
	}
	return strings.Fields(ids)
}

func ehlo(rc *rawConn) string { return rc.expectCmd("EHLO client.test", 250) }

// gatedSpool wraps a spool and records the order of events.
type orderLog struct {
	mu     sync.Mutex
	events []string
}

func (o *orderLog) add(format string, args ...any) {
	o.mu.Lock()
	o.events = append(o.events, fmt.Sprintf(format, args...))
	o.mu.Unlock()
}

type recordingSpool struct {
	spool.Spool
	name string
	log  *orderLog
}

func (r *recordingSpool) Store(ctx context.Context, id spool.ID, data []byte) error {
	err := r.Spool.Store(ctx, id, data)
	if err == nil {
		r.log.add("stored %s %s", r.name, id)
	}
	return err
}

// failingSpool fails every Store after the first `ok` ones.
type failingSpool struct {
	spool.Spool
	mu sync.Mutex
	ok int
}

func (f *failingSpool) Store(ctx context.Context, id spool.ID, data []byte) error {
	f.mu.Lock()
	fail := f.ok <= 0
	f.ok--
	f.mu.Unlock()
	if fail {
		return errors.New("no space left on device")
	}
	return f.Spool.Store(ctx, id, data)
}

func countSpool(t *testing.T, s spool.Spool) int {
	t.Helper()
	n := 0
	if err := s.Enumerate(context.Background(), func(spool.ID, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
