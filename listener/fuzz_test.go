package listener

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"
)

// conformant is the specification readData implements, written the slow
// and obvious way: every CR and LF is part of a CRLF pair, there is no
// NUL, and no line is longer than limit octets (excluding the CRLF).
func conformant(data []byte, limit int) bool {
	for _, line := range bytes.Split(data, []byte("\r\n")) {
		if len(line) > limit || bytes.ContainsAny(line, "\r\n\x00") {
			return false
		}
	}
	return true
}

// chunkReader returns at most n bytes per Read, so CRLF pairs and long
// lines straddle reads at fuzz-chosen places.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// FuzzReadData checks readData against conformant, whatever the read
// boundaries: it never panics, accepts exactly the conformant inputs,
// keeps them byte for byte, refuses the others with a 552 5.6.0, and
// accepts its own accepted output again.
func FuzzReadData(f *testing.F) {
	for _, s := range []string{
		"", "Subject: x\r\n\r\nbody\r\n", "a\nb", "a\rb", "a\r", "\r\n.\r\n", "\n.\n", "\r.\r",
		"x\r\n" + strings.Repeat("y", 100) + "\r\n", strings.Repeat("z", 101),
	} {
		f.Add([]byte(s), uint8(0), uint8(22))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk, limitSel uint8) {
		limit := 78 + int(limitSel) // Config allows no limit below 78
		want := conformant(data, limit)
		readers := map[string]io.Reader{
			"whole":     bytes.NewReader(data),
			"chunked":   &chunkReader{r: bytes.NewReader(data), n: int(chunk)%61 + 1},
			"bytewise":  iotest.OneByteReader(bytes.NewReader(data)),
			"data+EOF":  iotest.DataErrReader(bytes.NewReader(data)),
			"half+EOF":  iotest.DataErrReader(iotest.HalfReader(bytes.NewReader(data))),
			"all-but-1": &chunkReader{r: bytes.NewReader(data), n: max(1, len(data)-1)},
		}
		for name, r := range readers {
			var buf bytes.Buffer
			err := readData(r, &buf, limit)
			if (err == nil) != want {
				t.Fatalf("%s: readData(%q, %d) = %v, conformant = %v", name, data, limit, err, want)
			}
			if err != nil {
				var se *smtp.SMTPError
				if !errors.As(err, &se) || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) {
					t.Fatalf("%s: refusal %#v is not a 552 5.6.0", name, err)
				}
				continue
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("%s: accepted data changed: %q -> %q", name, data, buf.Bytes())
			}
			var again bytes.Buffer
			if err := readData(bytes.NewReader(buf.Bytes()), &again, limit); err != nil || !bytes.Equal(again.Bytes(), data) {
				t.Fatalf("%s: accepted output refused on re-check: %v", name, err)
			}
		}
	})
}

// readData reads in 32 KiB chunks: a CRLF pair split across two reads is
// fine, a CR ending one read and followed by anything but LF is not. (Too
// big for a fuzz seed: the fuzzer spends its time minimizing it.)
func TestReadDataChunkBoundary(t *testing.T) {
	head := strings.Repeat(strings.Repeat("w", 78)+"\r\n", 409) + strings.Repeat("v", 32767-409*80)
	for tail, ok := range map[string]bool{"\r\nend": true, "\rend": false, "\r": false, "\n": false} {
		var buf bytes.Buffer
		in := head + tail
		if in[32767] != tail[0] {
			t.Fatal("tail not at the chunk boundary")
		}
		if err := readData(strings.NewReader(in), &buf, 100); (err == nil) != ok || conformant([]byte(in), 100) != ok {
			t.Errorf("tail %q: readData %v, want ok=%v", tail, err, ok)
		}
	}
}

// memHandler stores accepted messages in memory. A message with the
// header "X-Fail: temp" or "X-Fail: perm" is refused with an error or a
// 554, to exercise the handler error paths.
type memHandler struct {
	mu       sync.Mutex
	msgs     []Message
	rejected []rejection
	inflight int
}

func (h *memHandler) HandleMessage(_ context.Context, m *Message) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inflight++
	defer func() { h.inflight-- }()
	switch {
	case bytes.Contains(m.Data, []byte("\r\nX-Fail: temp\r\n")):
		return nil, errors.New("storage unavailable")
	case bytes.Contains(m.Data, []byte("\r\nX-Fail: perm\r\n")):
		return nil, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "policy says no"}
	}
	c := *m
	c.Data = bytes.Clone(m.Data)
	c.Recipients = append([]Recipient(nil), m.Recipients...)
	h.msgs = append(h.msgs, c)
	return []string{fmt.Sprintf("id%d", len(h.msgs))}, nil
}

type rejection struct {
	sender string
	rcpts  []string
	code   int
}

func (h *memHandler) LogRejection(_ *SessionInfo, sender string, rcpts []string, resp *smtp.SMTPError) {
	h.mu.Lock()
	h.rejected = append(h.rejected, rejection{sender, rcpts, resp.Code})
	h.mu.Unlock()
}

// pipeListener hands out the server ends of net.Pipe connections, so a
// fuzz run opens no sockets.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }

// addrConn gives a pipe connection TCP addresses.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fuzzPeer is the client address of fuzzed sessions: not a relay host, but
// in sender.test's relay_from.
var fuzzPeer = netip.MustParseAddrPort("192.0.2.7:40000")

var fuzzDomains = DomainMap{
	"relay.test":  {RelayTo: true},
	"oob.test":    {LogOOB: LogThenRelay},
	"arf.test":    {LogARF: LogThenDrop},
	"sender.test": {RelayFrom: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
	"*.wild.test": {RelayTo: true},
}

// relayAllowed is the relay rule of the package documentation for a
// session from fuzzPeer.
func relayAllowed(sender string, rcpt Recipient) bool {
	if _, d, ok := splitAddress(sender); ok && fuzzDomains.lookup(d).RelayFromAllows(fuzzPeer.Addr()) {
		return true
	}
	d := fuzzDomains.lookup(rcpt.Domain)
	return d != nil && (d.RelayTo || d.LogOOB.Enabled() || d.LogARF.Enabled())
}

const fuzzLineLimit = 100

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)

// fuzzSession runs one SMTP session with input as everything the client
// sends, then a final "<CRLF>.<CRLF>QUIT<CRLF>", and returns the server's
// output and the handler.
func fuzzSession(t *testing.T, input []byte) (string, *memHandler) {
	t.Helper()
	h := &memHandler{}
	var logs lockedBuffer
	cfg := Config{
		Hostname:                 "mx.fuzz.test",
		Domains:                  fuzzDomains,
		MaxMessageSize:           8 << 10,
		MaxRecipients:            4,
		MaxMessagesPerConnection: 3,
		ClientTimeout:            250 * time.Millisecond,
		LineLengthLimit:          fuzzLineLimit,
	}
	pl := newPipeListener()
	l, err := NewWithListener(cfg, h, slog.New(slog.NewTextHandler(&logs, nil)), pl)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- l.Serve() }()
	defer func() {
		l.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		// The SMTP server (internal/smtpd) recovers panics in session
		// callbacks and in its own code, and logs them. None may happen
		// (go-smtp v0.25.1's BDAT goroutine called Data on a nil Session
		// when the connection closed first; internal/smtpd fixes that).
		if s := logs.String(); strings.Contains(s, "panic serving") {
			t.Fatalf("the session panicked:\n%s", s)
		}
	}()

	client, server := net.Pipe()
	defer client.Close()
	pl.conns <- &addrConn{Conn: server, local: pl.Addr(), remote: net.TCPAddrFromAddrPort(fuzzPeer)}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// Errors just mean the server closed the connection early.
		if _, err := client.Write(input); err == nil {
			_, _ = client.Write([]byte("\r\n.\r\nQUIT\r\n"))
		}
	}()
	// The server must end the session by itself: after QUIT, or after
	// ClientTimeout when it is still waiting for data.
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("session did not end: %v; output so far:\n%s", err, out)
	}
	client.Close()
	<-wrote

	// The session ends with the connection: it logs out soon after (at
	// once, unless the session closed its socket itself, as after a data
	// timeout).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		open := len(l.sessions)
		l.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still registered after the connection closed", open)
		}
	}
	return string(out), h
}

// FuzzSMTPSession feeds arbitrary client input to a real listener over an
// in-memory connection and checks that the server answers with well-formed
// replies, ends the session, and only ever hands on conformant messages
// that it may accept: no bare CR or LF, no over-long line, not over the
// size limit, relaying only as the rules allow, no more messages than
// DATA/BDAT commands, and exactly one "250 ... ids=" reply per message.
func FuzzSMTPSession(f *testing.F) {
	for _, s := range []string{
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@elsewhere.test>\r\nBDAT 5 LAST\r\nhi\r\n",
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nDATA\r\nhi\n.\nMAIL FROM:<e@x.test>\r\nRCPT TO:<v@relay.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@open.test>\r\nRCPT TO:<c@oob.test>\r\nDATA\r\n\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nBDAT 3\r\na\nbBDAT 2 LAST\r\n\r\n",
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nDATA\r\nhi\r\n.\rX\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nDATA\r\nhi\r\n.\r\r\n.\r\nMAIL FROM:<e@x.test>\r\nRCPT TO:<v@relay.test>\r\nDATA\r\nok\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nBDAT 3\r\nabcRSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nBDAT 2 LAST\r\nok",
		"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@relay.test>\r\nBDAT 0\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		out, h := fuzzSession(t, input)

		if !strings.HasPrefix(out, "220 ") {
			t.Fatalf("no greeting: %q", out)
		}
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("output does not end with a complete reply: %q", out)
		}
		okReplies := 0
		for _, line := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			// A line never holds an LF: no reply is split or injected.
			// It may hold a bare CR: go-smtp echoes an unrecognized
			// command, and a command line can contain one.
			if !replyLine.MatchString(line) || strings.Contains(line, "\n") {
				t.Fatalf("malformed reply line %q in\n%s", line, out)
			}
			if strings.HasPrefix(line, "250 2.0.0 OK ids=") {
				okReplies++
			}
		}

		h.mu.Lock()
		defer h.mu.Unlock()
		if h.inflight != 0 {
			t.Fatalf("%d handler calls still running after the session ended", h.inflight)
		}
		if len(h.msgs) != okReplies {
			t.Errorf("handler accepted %d messages, client saw %d OK replies", len(h.msgs), okReplies)
		}
		upper := bytes.ToUpper(input)
		if cmds := bytes.Count(upper, []byte("DATA")) + bytes.Count(upper, []byte("BDAT")); len(h.msgs) > cmds {
			t.Errorf("%d messages from %d DATA/BDAT commands", len(h.msgs), cmds)
		}
		for i, m := range h.msgs {
			if !conformant(m.Data, fuzzLineLimit) {
				t.Errorf("message %d is not conformant: %q", i, m.Data)
			}
			if len(m.Data) > 8<<10 {
				t.Errorf("message %d has %d bytes, over the limit", i, len(m.Data))
			}
			if len(m.Recipients) == 0 || len(m.Recipients) > 4 {
				t.Errorf("message %d has %d recipients", i, len(m.Recipients))
			}
			for _, r := range m.Recipients {
				if !relayAllowed(m.Sender, r) {
					t.Errorf("message %d: relayed from %q to %q", i, m.Sender, r.Address)
				}
			}
		}
	})
}
