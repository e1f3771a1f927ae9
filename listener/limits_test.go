package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// dialSMTP connects and reads the greeting, returning its code and text.
func dialSMTP(t *testing.T, addr string) (*textproto.Conn, int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	code, msg, _ := tp.ReadResponse(0)
	return tp, code, msg
}

func cmd(t *testing.T, tp *textproto.Conn, line string) (int, string) {
	t.Helper()
	if err := tp.PrintfLine("%s", line); err != nil {
		t.Fatal(err)
	}
	code, msg, _ := tp.ReadResponse(0)
	return code, msg
}

// Connections beyond MaxConnections are refused with KumoMTA's 421; a
// slot freed by a closed session is reused.
func TestMaxConnections(t *testing.T) {
	addr := startTCP(t, Config{Domains: fuzzDomains, MaxConnections: 2}, &memHandler{})
	first, code, _ := dialSMTP(t, addr)
	if code != 220 {
		t.Fatalf("first connection greeted with %d", code)
	}
	if _, code, _ := dialSMTP(t, addr); code != 220 {
		t.Fatalf("second connection greeted with %d", code)
	}
	_, code, msg := dialSMTP(t, addr)
	if code != 421 || !strings.Contains(msg, "too many concurrent sessions") {
		t.Fatalf("third connection got %d %q, want 421 too many concurrent sessions", code, msg)
	}
	cmd(t, first, "QUIT")
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, code, _ := dialSMTP(t, addr)
		if code == 220 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot of a closed session never freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connection may carry MaxMessagesPerConnection messages; the next MAIL
// is refused with 451 so the client reconnects.
func TestMaxMessagesPerConnection(t *testing.T) {
	h := &memHandler{}
	addr := startTCP(t, Config{Domains: fuzzDomains, MaxMessagesPerConnection: 2}, h)
	tp, _, _ := dialSMTP(t, addr)
	cmd(t, tp, "EHLO c.test")
	for i := range 2 {
		for _, line := range []string{"MAIL FROM:<a@x.test>", "RCPT TO:<b@relay.test>"} {
			if code, msg := cmd(t, tp, line); code != 250 {
				t.Fatalf("message %d: %s: %d %s", i+1, line, code, msg)
			}
		}
		if code, _ := cmd(t, tp, "DATA"); code != 354 {
			t.Fatalf("message %d: DATA %d", i+1, code)
		}
		if code, msg := cmd(t, tp, "Subject: x\r\n\r\nbody\r\n."); code != 250 {
			t.Fatalf("message %d: %d %s", i+1, code, msg)
		}
	}
	code, msg := cmd(t, tp, "MAIL FROM:<a@x.test>")
	if code != 451 || !strings.Contains(msg, "too many messages on this connection (limit 2)") {
		t.Fatalf("third MAIL got %d %q, want 451 too many messages", code, msg)
	}
}

// A failing listener-domain lookup is a temporary condition: 451, never a
// 550 that would bounce the client's mail, and the session goes on.
func TestDomainLookupErrorIsTemporary(t *testing.T) {
	failing := DomainLookupFunc(func(_ context.Context, domain, _ string) (*ListenerDomain, error) {
		if domain == "broken.test" {
			return nil, errors.New("policy backend unavailable")
		}
		return fuzzDomains.LookupListenerDomain(context.Background(), domain, "")
	})
	addr := startTCP(t, Config{Domains: failing, RelayHosts: []netip.Prefix{}}, &memHandler{})
	tp, _, _ := dialSMTP(t, addr)
	cmd(t, tp, "EHLO c.test")
	if code, msg := cmd(t, tp, "MAIL FROM:<a@x.test>"); code != 250 {
		t.Fatalf("MAIL: %d %s", code, msg)
	}
	if code, msg := cmd(t, tp, "RCPT TO:<b@broken.test>"); code != 451 {
		t.Fatalf("RCPT to a domain whose lookup fails: %d %q, want 451", code, msg)
	}
	if code, msg := cmd(t, tp, "RCPT TO:<b@relay.test>"); code != 250 {
		t.Fatalf("RCPT after the failure: %d %q, want 250", code, msg)
	}
}

// The greeting is "220 <hostname> <banner>", KumoMTA's form.
func TestGreetingBanner(t *testing.T) {
	for _, tc := range []struct{ banner, want string }{
		{"", "mx.test mtakit"},
		{"Example Mail Service", "mx.test Example Mail Service"},
	} {
		addr := startTCP(t, Config{Hostname: "mx.test", Banner: tc.banner}, &memHandler{})
		tp, code, msg := dialSMTP(t, addr)
		if code != 220 || msg != tc.want {
			t.Errorf("banner %q: greeting %d %q, want 220 %q", tc.banner, code, msg, tc.want)
		}
		if code, _ := cmd(t, tp, "EHLO c.test"); code != 250 {
			t.Errorf("EHLO after the greeting: %d", code)
		}
	}
}

// The reply to a transaction that made many messages stays within RFC
// 5321's 512-octet reply line.
func TestOKReplyFitsOneLine(t *testing.T) {
	id := strings.Repeat("a", 32)
	for _, n := range []int{1, 14, 15, 100, 1000} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = id
		}
		line := "250 2.0.0 " + okReply(ids) + "\r\n"
		if len(line) > maxReplyLine {
			t.Errorf("%d ids: reply of %d octets", n, len(line))
		}
		listed := strings.Count(line, id)
		if listed < 1 || (listed < n && !strings.Contains(line, fmt.Sprintf("(+%d more)", n-listed))) {
			t.Errorf("%d ids: %d listed, reply %q", n, listed, line)
		}
		if n <= 14 && listed != n {
			t.Errorf("%d ids fit in one line but %d listed", n, listed)
		}
	}
}

// A message that does not fit in the reception budget is read to its end
// and deferred with 452 4.3.1; the session goes on, and the budget is
// whole again afterwards.
func TestReceptionBudget(t *testing.T) {
	budget := NewBudget(256 << 10)
	h := &memHandler{}
	addr := startTCP(t, Config{Domains: fuzzDomains, Budget: budget}, h)
	tp, _, _ := dialSMTP(t, addr)
	cmd(t, tp, "EHLO c.test")
	send := func(size int) (int, string) {
		t.Helper()
		for _, line := range []string{"MAIL FROM:<a@x.test>", "RCPT TO:<b@relay.test>"} {
			if code, msg := cmd(t, tp, line); code != 250 {
				t.Fatalf("%s: %d %s", line, code, msg)
			}
		}
		if code, _ := cmd(t, tp, "DATA"); code != 354 {
			t.Fatalf("DATA: %d", code)
		}
		body := strings.Repeat(strings.Repeat("x", 998)+"\r\n", size/1000)
		return cmd(t, tp, "Subject: big\r\n\r\n"+body+".")
	}
	if code, msg := send(1 << 20); code != 452 || !strings.HasPrefix(msg, "4.3.1") {
		t.Fatalf("1 MiB over a 256 KiB budget: %d %q, want 452 4.3.1", code, msg)
	}
	if code, msg := send(10 << 10); code != 250 {
		t.Fatalf("10 KiB after the refusal: %d %q", code, msg)
	}
	h.mu.Lock()
	n := len(h.msgs)
	h.mu.Unlock()
	if n != 1 {
		t.Errorf("handler got %d messages, want only the small one", n)
	}
	if budget.InUse() != 0 {
		t.Errorf("%d bytes still reserved after the transactions", budget.InUse())
	}
}

// MaxConnectionsPerIP bounds sessions from one address; others still get
// in (127.0.0.2 is another loopback address on Linux).
func TestMaxConnectionsPerIP(t *testing.T) {
	addr := startTCP(t, Config{Addr: "127.0.0.1:0", Domains: fuzzDomains, MaxConnectionsPerIP: 2}, &memHandler{})
	for i := range 2 {
		if _, code, _ := dialSMTP(t, addr); code != 220 {
			t.Fatalf("connection %d greeted with %d", i+1, code)
		}
	}
	_, code, msg := dialSMTP(t, addr)
	if code != 421 || !strings.Contains(msg, "from your address") {
		t.Fatalf("third connection from one address: %d %q, want 421", code, msg)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if code, _, _ := textproto.NewConn(c).ReadResponse(0); code != 220 {
		t.Errorf("connection from another address greeted with %d", code)
	}
}
