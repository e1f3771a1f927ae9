package listener

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// startTCP serves a listener on a loopback port for the test's lifetime.
func startTCP(t *testing.T, cfg Config, h Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.test"
	}
	l, err := NewWithListener(cfg, h, nil, ln)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Serve() }()
	t.Cleanup(func() { l.Close(); <-done })
	return ln.Addr().String()
}

// readReplies reads n replies and returns their codes.
func readReplies(t *testing.T, tp *textproto.Conn, n int) []int {
	t.Helper()
	codes := make([]int, n)
	for i := range codes {
		code, msg, err := tp.ReadResponse(0)
		if err != nil && code == 0 {
			t.Fatalf("reply %d: %v", i+1, err)
		}
		_ = msg
		codes[i] = code
	}
	return codes
}

// A BDAT chunk with a bare LF is refused by the goroutine go-smtp runs
// Data on, while the connection's goroutine already handles the client's
// pipelined RSET and next transaction. The refusal must be logged with
// the envelope of the refused transaction, and (under -race) without a
// data race on the session's transaction state.
func TestBDATRefusalKeepsItsEnvelope(t *testing.T) {
	h := &memHandler{}
	addr := startTCP(t, Config{Domains: fuzzDomains}, h)
	const conns = 40
	for i := 0; i < conns; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// One write: everything after EHLO is pipelined.
		_, err = c.Write([]byte("EHLO c\r\n" +
			"MAIL FROM:<bdat@x.test>\r\nRCPT TO:<first@relay.test>\r\nBDAT 3\r\na\nb" +
			"RSET\r\n" +
			"MAIL FROM:<data@x.test>\r\nRCPT TO:<second@relay.test>\r\nDATA\r\nSubject: ok\r\n\r\nx\r\n.\r\nQUIT\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		tp := textproto.NewConn(c)
		// greeting, EHLO, MAIL, RCPT, BDAT, RSET, MAIL, RCPT, DATA, dot, QUIT
		codes := readReplies(t, tp, 11)
		c.Close()
		if codes[4] != 250 && codes[4] != 552 || codes[9] != 250 {
			t.Fatalf("connection %d: replies %v", i, codes)
		}
	}
	// The refusals are logged by the BDAT goroutines, which may still be
	// finishing after the last reply.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		n := len(h.rejected)
		h.mu.Unlock()
		if n >= conns || time.Now().After(deadline) {
			break
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) != conns {
		t.Errorf("%d messages accepted, want %d", len(h.msgs), conns)
	}
	for _, m := range h.msgs {
		if m.Sender != "data@x.test" || len(m.Recipients) != 1 || m.Recipients[0].Address != "second@relay.test" {
			t.Errorf("accepted message has envelope %q -> %+v", m.Sender, m.Recipients)
		}
	}
	if len(h.rejected) != conns {
		t.Fatalf("%d rejections logged, want %d", len(h.rejected), conns)
	}
	for _, r := range h.rejected {
		if r.code != 552 || r.sender != "bdat@x.test" || len(r.rcpts) != 1 || r.rcpts[0] != "first@relay.test" {
			t.Errorf("rejection logged as %+v, want 552 for bdat@x.test -> first@relay.test", r)
		}
	}
}

// ClientTimeout bounds each wait for the client, not the whole message: a
// message whose data arrives in pieces over several ClientTimeouts is
// accepted (go-smtp alone sets the deadline once, at the DATA command, and
// answers a permanent 554 when the transfer takes longer).
func TestSlowDataWithinClientTimeout(t *testing.T) {
	h := &memHandler{}
	const timeout = 400 * time.Millisecond
	addr := startTCP(t, Config{ClientTimeout: timeout, Domains: fuzzDomains}, h)
	c, tp := dialToData(t, addr)
	w := bufio.NewWriter(c)
	w.WriteString("Subject: slow\r\n\r\n")
	for i := 0; i < 8; i++ { // 8 × timeout/4 = twice the timeout, 2 KiB each time
		w.WriteString("line " + strings.Repeat("x", i) + "\r\n" + strings.Repeat(strings.Repeat("y", 998)+"\r\n", 2))
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout / 4)
	}
	w.WriteString(".\r\n")
	w.Flush()
	code, msg, err := tp.ReadResponse(0)
	if code != 250 {
		t.Fatalf("slow message: %d %q %v", code, msg, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) != 1 || !strings.Contains(string(h.msgs[0].Data), "line xxxxxxx\r\n") {
		t.Fatalf("messages %+v", h.msgs)
	}
}

// A client that stops sending in the middle of the data is still cut off
// after ClientTimeout.
func TestStalledDataTimesOut(t *testing.T) {
	h := &memHandler{}
	const timeout = 300 * time.Millisecond
	addr := startTCP(t, Config{ClientTimeout: timeout, Domains: fuzzDomains}, h)
	c, tp := dialToData(t, addr)
	start := time.Now()
	c.Write([]byte("Subject: stalled\r\n\r\nhalf"))
	code, msg, _ := tp.ReadResponse(0)
	if code != 421 || !strings.HasPrefix(msg, "4.4.2 ") {
		t.Errorf("stalled data answered %d %q, want 421 4.4.2", code, msg)
	}
	_, err := tp.R.ReadByte() // until the server closes
	if d := time.Since(start); err == nil || d > 10*timeout {
		t.Fatalf("connection held for %v after the client stalled (%v)", d, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) != 0 {
		t.Fatal("stalled message accepted")
	}
}

// dialToData connects to addr and runs HELO, MAIL, RCPT and DATA, leaving
// the connection ready for message data.
func dialToData(t *testing.T, addr string) (net.Conn, *textproto.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	tp := textproto.NewConn(c)
	readReplies(t, tp, 1)
	for _, cmd := range []string{"HELO c", "MAIL FROM:<a@x.test>", "RCPT TO:<b@relay.test>", "DATA"} {
		if err := tp.PrintfLine("%s", cmd); err != nil {
			t.Fatal(err)
		}
		readReplies(t, tp, 1)
	}
	return c, tp
}

// A BDAT chunk trickled one octet at a time, each just within
// ClientTimeout, is cut off like DATA: the average rate must keep up.
func TestTrickledBDATTimesOut(t *testing.T) {
	h := &memHandler{}
	const timeout = 300 * time.Millisecond
	addr := startTCP(t, Config{ClientTimeout: timeout, Domains: fuzzDomains}, h)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	tp := textproto.NewConn(c)
	readReplies(t, tp, 1)
	for _, cmd := range []string{"EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<b@relay.test>"} {
		tp.PrintfLine("%s", cmd)
		readReplies(t, tp, 1)
	}
	const chunk = "Subject: trickle\r\n\r\nslowly\r\n"
	start := time.Now()
	fmt.Fprintf(c, "BDAT %d LAST\r\n", len(chunk))
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for i := 0; i < len(chunk); i++ {
			if _, err := c.Write([]byte{chunk[i]}); err != nil {
				return
			}
			time.Sleep(timeout * 2 / 3) // each octet within the per-read timeout
		}
	}()
	code, msg, _ := tp.ReadResponse(0)
	if code == 250 {
		t.Fatalf("trickled BDAT accepted after %v: %q", time.Since(start), msg)
	}
	if d := time.Since(start); d > 10*timeout {
		t.Errorf("trickled BDAT held the connection for %v", d)
	}
	c.Close()
	<-closed
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) != 0 {
		t.Fatal("trickled message accepted")
	}
}
