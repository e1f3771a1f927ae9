package smtpsink

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestAcceptAndStore(t *testing.T) {
	s := startSink(t, Options{Store: true, Hostname: "mx.sink.test"})
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr = %q", s.Addr())
	}
	c := dial(t, s)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised without TLS")
	}
	if size, ok := c.MaxMessageSize(); !ok || size != DefaultMaxMessageBytes {
		t.Errorf("SIZE = %d, %v", size, ok)
	}
	m1 := testMessage("one", 500)
	reply, err := send(c, "a@example.com", []string{"x@example.net", "y@example.net"}, m1)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if !strings.Contains(reply, "OK: queued as S") {
		t.Errorf("reply %q", reply)
	}
	m2 := testMessage("two", 100)
	if _, err := send(c, "", []string{"z@example.net"}, m2); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("Quit: %v", err)
	}

	if got := s.Count(); got != 2 {
		t.Errorf("Count = %d, want 2", got)
	}
	if got := s.Recipients(); got != 3 {
		t.Errorf("Recipients = %d, want 3", got)
	}
	msgs := s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@example.com" || strings.Join(m.To, ",") != "x@example.net,y@example.net" ||
		!bytes.Equal(m.Data, m1) || m.EHLO != "client.test" || m.TLS || m.Key != "<one@test>" ||
		m.ReceivedAt.IsZero() || !strings.HasPrefix(m.RemoteAddr, "127.0.0.1:") {
		t.Errorf("message 0 = %+v", m)
	}
	if !strings.HasSuffix(reply, "S"+strconv.FormatInt(m.Seq, 10)) {
		t.Errorf("reply %q does not name seq %d", reply, m.Seq)
	}
	if msgs[1].From != "" || !bytes.Equal(msgs[1].Data, m2) {
		t.Errorf("message 1 = %+v", msgs[1])
	}
	st := s.Stats()
	if st.Messages != 2 || st.Recipients != 3 || st.Bytes != int64(len(m1)+len(m2)) || st.Connections != 1 ||
		st.MaxPerConn != 2 || st.Unkeyed != 0 || st.Duplicates != 0 {
		t.Errorf("stats %+v", st)
	}
	if s.UniqueDeliveries() != 3 || s.DeliveryCount("<one@test>", "y@example.net") != 1 {
		t.Errorf("deliveries: unique %d", s.UniqueDeliveries())
	}

	s.Reset()
	if s.Count() != 0 || len(s.Messages()) != 0 || s.UniqueDeliveries() != 0 {
		t.Error("Reset left state behind")
	}
}

func TestNoStoreKeepsNoBodies(t *testing.T) {
	s := startSink(t, Options{})
	c := dial(t, s)
	for i := range 5 {
		if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("n"+strconv.Itoa(i), 300)); err != nil {
			t.Fatal(err)
		}
	}
	if s.Count() != 5 || s.Messages() != nil || s.UniqueDeliveries() != 5 {
		t.Errorf("count %d, messages %v, unique %d", s.Count(), s.Messages(), s.UniqueDeliveries())
	}
}

func TestDuplicatesByHeader(t *testing.T) {
	s := startSink(t, Options{KeyHeader: "X-Test-Seq"})
	c := dial(t, s)
	mustSend := func(seq string, to ...string) {
		t.Helper()
		if _, err := send(c, "a@example.com", to, testMessage(seq, 200)); err != nil {
			t.Fatalf("send %s: %v", seq, err)
		}
	}
	mustSend("1", "a@x.test", "b@x.test")
	mustSend("2", "a@x.test")
	mustSend("1", "a@x.test")
	mustSend("1", "a@x.test")
	if _, err := send(c, "a@example.com", []string{"a@x.test"}, []byte("Subject: no key\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	dups := s.Duplicates()
	if len(dups) != 1 || dups[0] != (Duplicate{Key: "1", Rcpt: "a@x.test", Count: 3}) {
		t.Fatalf("Duplicates = %+v", dups)
	}
	if n := s.DeliveryCount("1", "b@x.test"); n != 1 {
		t.Errorf("DeliveryCount(1, b) = %d", n)
	}
	st := s.Stats()
	if st.Duplicates != 2 || st.Unkeyed != 1 || st.Messages != 5 {
		t.Errorf("stats %+v", st)
	}
}

func TestMaxMessageBytes(t *testing.T) {
	s := startSink(t, Options{MaxMessageBytes: 1000})
	c := dial(t, s)
	_, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("big", 3000))
	if smtpCode(err) != 552 {
		t.Fatalf("err = %v, want 552", err)
	}
	if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("small", 500)); err != nil {
		t.Fatalf("small message after 552: %v", err)
	}
	if s.Count() != 1 {
		t.Errorf("Count = %d", s.Count())
	}
}

func TestWaitCount(t *testing.T) {
	s := startSink(t, Options{})
	done := make(chan error, 1)
	go func() {
		c, err := tryDial(s)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		for i := range 3 {
			if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("w"+strconv.Itoa(i), 100)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.WaitCount(ctx, 3); err != nil {
		t.Fatalf("WaitCount: %v", err)
	}
	if err := s.WaitRecipients(ctx, 3); err != nil {
		t.Fatalf("WaitRecipients: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start := time.Now()
	err := s.WaitCount(short, 100)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitCount(100) = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("WaitCount overran its deadline")
	}

	// Wait on another statistic, and ErrClosed after Close.
	waitErr := make(chan error, 1)
	go func() { waitErr <- s.Wait(ctx, func(st Stats) bool { return st.Messages >= 1000 }) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v, want ErrClosed", err)
	}
	if err := s.WaitCount(ctx, 3); err != nil {
		t.Fatalf("WaitCount(3) after Close = %v, want nil (already reached)", err)
	}
}

func TestAddressMustBeLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:2525", "[::]:0", "example.com:25", "nonsense"} {
		if _, err := Start(Options{Addr: addr}); err == nil {
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
	for _, addr := range []string{"localhost:0", ":0"} {
		s := startSink(t, Options{Addr: addr})
		if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
			t.Errorf("Start(%q): Addr = %q", addr, s.Addr())
		}
	}
}

func TestHeaderValue(t *testing.T) {
	msg := []byte("Subject: hi\r\nmessage-id:  <a@b>\r\nX-Fold: one\r\n\ttwo\r\n  three\r\nX-Empty:\r\n\r\nMessage-ID: body\r\n")
	for name, want := range map[string]string{
		"Message-ID": "<a@b>", "x-fold": "one two three", "Subject": "hi", "X-Empty": "", "Missing": "",
	} {
		if got := headerValue(msg, name); got != want {
			t.Errorf("headerValue(%q) = %q, want %q", name, got, want)
		}
	}
	if got := headerValue([]byte("A: 1\nB: 2\n\nC: 3"), "B"); got != "2" {
		t.Errorf("LF-only header: %q", got)
	}
}

func TestSTARTTLS(t *testing.T) {
	s := startSink(t, Options{TLS: true, Store: true})
	c, err := dialTLS(t, s, testTimeout)
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("client not on TLS")
	}
	if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("tls", 200)); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 || !msgs[0].TLS || msgs[0].EHLO != "client.test" {
		t.Fatalf("messages %+v", msgs)
	}
	if st := s.Stats(); st.TLSMessages != 1 {
		t.Errorf("TLSMessages = %d", st.TLSMessages)
	}
}

func TestManyConnections(t *testing.T) {
	s := startSink(t, Options{})
	const n = 25
	clients := make([]*smtp.Client, n)
	for i := range clients {
		clients[i] = dial(t, s)
	}
	if st := s.Stats(); st.ActiveConns != n || st.PeakConns != n || st.Connections != n {
		t.Fatalf("stats %+v", st)
	}
	errs := make(chan error, n)
	for i, c := range clients {
		go func() {
			_, err := send(c, "a@example.com", []string{"r@example.net"}, testMessage("c"+strconv.Itoa(i), 2048))
			if err == nil {
				err = c.Quit()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Wait(ctx, func(st Stats) bool { return st.ActiveConns == 0 }); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Messages != n || s.UniqueDeliveries() != n {
		t.Errorf("stats %+v", st)
	}
}
