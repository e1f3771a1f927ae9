package egress_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/shaping"
)

// peer is the server side of a scripted SMTP conversation: the tests below
// need control over timing and replies that a real server does not give.
type peer struct {
	conn net.Conn
	r    *bufio.Reader
}

// line reads one command line without its CRLF.
func (p *peer) line() (string, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(clientTimeout))
	l, err := p.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading a command: %w (got %q)", err, l)
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

// expect reads one command line and checks that it starts with prefix.
func (p *peer) expect(prefix string) (string, error) {
	l, err := p.line()
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(l, prefix) {
		return l, fmt.Errorf("got %q, want %q...", l, prefix)
	}
	return l, nil
}

// say writes reply lines, each with CRLF, in one write.
func (p *peer) say(lines ...string) error {
	_, err := p.conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
	return err
}

// data reads message data up to the final "." and returns it as sent
// (still dot-stuffed).
func (p *peer) data() (string, error) {
	var b strings.Builder
	for range 100000 {
		l, err := p.line()
		if err != nil {
			return b.String(), err
		}
		if l == "." {
			return b.String(), nil
		}
		b.WriteString(l + "\r\n")
	}
	return b.String(), errors.New("data too long")
}

// steps runs a script of expect/say pairs: a step starting with ">" is a
// command to expect (by prefix), any other a reply line to send.
func (p *peer) steps(steps ...string) error {
	var out []string
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		err := p.say(out...)
		out = nil
		return err
	}
	for _, s := range steps {
		if cmd, ok := strings.CutPrefix(s, ">"); ok {
			if err := flush(); err != nil {
				return err
			}
			if _, err := p.expect(cmd); err != nil {
				return err
			}
			continue
		}
		out = append(out, s)
	}
	return flush()
}

// scripted serves one connection with script and returns DialOptions for
// it. The script's error, if any, fails the test at cleanup.
func scripted(t *testing.T, script func(p *peer) error) egress.DialOptions {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		done <- script(&peer{conn: conn, r: bufio.NewReader(conn)})
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server script: %v", err)
			}
		case <-time.After(2 * clientTimeout):
			t.Error("server script did not finish")
		}
	})
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return egress.DialOptions{
		Hosts:    []egress.MXHost{{Name: "script.test", Addrs: []netip.Addr{ap.Addr()}}},
		Port:     int(ap.Port()),
		Config:   loopbackConfig(),
		Hostname: "mta.test",
	}
}

func TestPipelinedTransaction(t *testing.T) {
	body := "Subject: p\r\n\r\n.dot\r\nend\r\n"
	opts := scripted(t, func(p *peer) error {
		if err := p.steps("220 script.test ready", ">EHLO mta.test",
			"250-script.test", "250-PIPELINING", "250-8BITMIME", "250 SIZE 1000000"); err != nil {
			return err
		}
		// All four commands arrive before any reply; a client that waited
		// for the MAIL reply would stall here until its timeout.
		for _, want := range []string{"MAIL FROM:<s@example.com> SIZE=" + fmt.Sprint(len(body)),
			"RCPT TO:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"} {
			l, err := p.expect(want)
			if err != nil {
				return err
			}
			if l != want {
				return fmt.Errorf("command %q, want %q", l, want)
			}
		}
		if err := p.say("250 2.1.0 sender ok", "250 2.1.5 ok", "550 5.1.1 no such user", "354 go ahead"); err != nil {
			return err
		}
		got, err := p.data()
		if err != nil {
			return err
		}
		if want := "Subject: p\r\n\r\n..dot\r\nend\r\n"; got != want {
			return fmt.Errorf("data %q, want %q", got, want)
		}
		return p.steps("250-2.0.0 queued as 1", "250 2.0.0 have a nice day", ">QUIT", "221 bye")
	})
	opts.Config.MailFromTimeout = 2 * time.Second
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com",
		Recipients: []string{"a@example.com", "b@example.com"}, Data: []byte(body)})
	if got := res.Recipients[0].String(); got != "250 2.0.0 queued as 1 have a nice day" {
		t.Errorf("accepted recipient: %q", got)
	}
	if res.Recipients[0].Text != "queued as 1\nhave a nice day" {
		t.Errorf("multi-line text %q", res.Recipients[0].Text)
	}
	wantCode(t, "refused recipient", res.Recipients[1], 550, "5.1.1")
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// RFC 2920 section 3.1: DATA accepted although every RCPT was refused.
func TestPipelinedDataWithoutRecipients(t *testing.T) {
	opts := scripted(t, func(p *peer) error {
		return p.steps("220 ready", ">EHLO", "250-script.test", "250 PIPELINING",
			">MAIL FROM:<s@example.com>", ">RCPT TO:<a@example.com>", ">DATA",
			"250 ok", "550 5.1.1 unknown", "354 send it anyway",
			">.", "554 5.5.1 no valid recipients",
			">RSET", "250 reset",
			">MAIL FROM:<s@example.com>", ">RCPT TO:<b@example.com>", ">DATA",
			"250 ok", "250 ok", "354 go",
			">Subject", ">", ">body", ">.", "250 done",
			">QUIT", "221 bye")
	})
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("x")[:0]})
	wantCode(t, "refused", res.Recipients[0], 550, "5.1.1")
	if res.Data.Code != 0 || !c.Usable() {
		t.Errorf("data %+v usable %v", res.Data, c.Usable())
	}
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"b@example.com"},
		Data: []byte("Subject: s\r\n\r\nbody\r\n")})
	if res.Recipients[0].String() != "250 done" {
		t.Errorf("second message: %q", res.Recipients[0])
	}
}

func TestNonPipelinedServer(t *testing.T) {
	opts := scripted(t, func(p *peer) error {
		if err := p.steps("220 ready", ">EHLO", "250-script.test", "250 8BITMIME", ">MAIL FROM:<s@example.com>"); err != nil {
			return err
		}
		if n := p.r.Buffered(); n != 0 {
			return fmt.Errorf("client pipelined %d bytes to a server without PIPELINING", n)
		}
		return p.steps("250 ok",
			">RCPT TO:<a@example.com>", "550 5.1.1 unknown",
			// No accepted recipient: no DATA, but RSET.
			">RSET", "250 ok",
			">MAIL FROM:<s@example.com> BODY=8BITMIME", "250 ok",
			">RCPT TO:<b@example.com>", "250 ok",
			">DATA", "354 go",
			">Subject: \xc3\xa9", ">", ">x", ">.", "250 2.0.0 done",
			">QUIT", "221 bye")
	})
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("np")})
	wantCode(t, "refused", res.Recipients[0], 550, "5.1.1")
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"b@example.com"},
		Data: []byte("Subject: \xc3\xa9\r\n\r\nx\r\n")})
	wantCode(t, "accepted", res.Recipients[0], 250, "2.0.0")
}

func TestEightBitWithout8BITMIME(t *testing.T) {
	opts := scripted(t, func(p *peer) error {
		return p.steps("220 ready", ">EHLO", "250-script.test", "250 PIPELINING",
			// The 8-bit message is failed without a command; with
			// Ignore8BitChecks it would be sent.
			">QUIT", "221 bye")
	})
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com", "b@example.com"},
		Data: []byte("Subject: \xff\r\n\r\n")})
	for _, r := range res.Recipients {
		if !strings.HasPrefix(r.String(), "554 5.6.3 KumoMTA internal: DATA is 8bit, destination does not support 8BITMIME.") ||
			!r.Permanent() {
			t.Errorf("got %q", r)
		}
	}
	if c.Deliveries() != 0 {
		t.Errorf("deliveries %d", c.Deliveries())
	}
}

func TestHELOFallback(t *testing.T) {
	opts := scripted(t, func(p *peer) error {
		return p.steps("220 old server", ">EHLO mta.test", "502 5.5.2 what?", ">HELO mta.test", "250 hello",
			">MAIL FROM:<s@example.com>", "250 ok", ">RCPT TO:<a@example.com>", "250 ok", ">DATA", "354 go",
			">Subject", ">", ">Hello.", ">.", "250 ok",
			">QUIT", "221 bye")
	})
	opts.Config.EnableTLS = shaping.Opportunistic
	c := dial(t, opts)
	if len(c.Extensions()) != 0 {
		t.Errorf("extensions %v", c.Extensions())
	}
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"},
		Data: []byte("Subject: h\r\n\r\nHello.\r\n")})
	if res.Recipients[0].String() != "250 ok" {
		t.Errorf("got %q", res.Recipients[0])
	}
}

func TestSTARTTLSResponseInjection(t *testing.T) {
	opts := scripted(t, func(p *peer) error {
		// "250 injected" arrives with the 220 and must not be read as if it
		// came through TLS.
		return p.steps("220 ready", ">EHLO", "250-script.test", "250 STARTTLS", ">STARTTLS", "220 go ahead", "250 injected")
	})
	opts.Config.EnableTLS = shaping.OpportunisticInsecure
	resp, _ := dialErr(t, opts)
	if !strings.Contains(resp.Text, "peer sent data after its STARTTLS reply") {
		t.Errorf("got %q", resp)
	}
}

func TestUnsolicitedReplyWhileIdle(t *testing.T) {
	ready := make(chan struct{})
	opts := scripted(t, func(p *peer) error {
		if err := p.steps("220 ready", ">EHLO", "250-script.test", "250 PIPELINING"); err != nil {
			return err
		}
		<-ready
		return p.say("421 4.4.2 idle too long")
	})
	c := dial(t, opts)
	if !c.Usable() {
		t.Fatal("not usable right after Dial")
	}
	close(ready)
	usable := true
	for range 200 {
		if usable = c.Usable(); !usable {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if usable {
		t.Fatal("still usable after an unsolicited 421")
	}
	_, err := c.Send(context.Background(), egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"},
		Data: message("late")})
	if !errors.Is(err, egress.ErrConnUnusable) {
		t.Errorf("Send: %v", err)
	}
}

func TestDataWriteTimeout(t *testing.T) {
	release := make(chan struct{})
	opts := scripted(t, func(p *peer) error {
		if err := p.steps("220 ready", ">EHLO", "250-script.test", "250 PIPELINING",
			">MAIL", ">RCPT", ">DATA", "250 ok", "250 ok", "354 go"); err != nil {
			return err
		}
		// Stop reading: the client's writes fill the socket buffers and
		// then block until its deadline.
		<-release
		return nil
	})
	opts.Config.DataTimeout = 300 * time.Millisecond
	c := dial(t, opts)
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	start := time.Now()
	res, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"},
		Data: bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"), 1<<19)})
	resp, ok := egress.ResponseOf(err)
	if !ok {
		t.Fatalf("Send: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	wantCode(t, "write timeout", resp, 421, "4.4.2")
	if !strings.Contains(resp.Text, "Timed Out after 300ms sending message payload data") || res.Recipients[0] != resp {
		t.Errorf("got %+v", resp)
	}
	if c.Usable() {
		t.Error("usable after a write timeout")
	}
}

func TestNonPipelinedMailRefused(t *testing.T) {
	opts := scripted(t, func(p *peer) error {
		// A refused MAIL FROM ends the transaction: no RCPT, but RSET.
		return p.steps("220 ready", ">EHLO", "250 script.test",
			">MAIL FROM:<s@example.com>", "452 4.3.1 insufficient storage",
			">RSET", "250 ok", ">QUIT", "221 bye")
	})
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com", "b@example.com"},
		Data: message("m")})
	for _, r := range res.Recipients {
		wantCode(t, "recipient", r, 452, "4.3.1")
	}
	if res.Rcpt[0].Code != 0 || !c.Usable() {
		t.Errorf("rcpt %+v usable %v", res.Rcpt[0], c.Usable())
	}
}
