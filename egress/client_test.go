package egress_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/shaping"
)

// clientTimeout bounds every wait in these tests that is not itself under
// test.
const clientTimeout = 5 * time.Second

func startSink(tb testing.TB, opts smtpsink.Options) *smtpsink.Sink {
	tb.Helper()
	s, err := smtpsink.Start(opts)
	if err != nil {
		tb.Fatalf("smtpsink.Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("sink Close: %v", err)
		}
	})
	return s
}

// loopbackConfig is the default path config with loopback allowed (it is
// prohibited by default) and short timeouts.
func loopbackConfig() shaping.PathConfig {
	cfg := shaping.Default()
	cfg.ProhibitedHosts = []netip.Prefix{}
	cfg.ConnectTimeout = clientTimeout
	cfg.BannerTimeout = clientTimeout
	cfg.EHLOTimeout = clientTimeout
	cfg.StartTLSTimeout = clientTimeout
	cfg.MailFromTimeout = clientTimeout
	cfg.RcptToTimeout = clientTimeout
	cfg.DataTimeout = clientTimeout
	cfg.DataDotTimeout = clientTimeout
	return cfg
}

// sinkAddr splits the sink's listening address.
func sinkAddr(tb testing.TB, s *smtpsink.Sink) (netip.Addr, int) {
	tb.Helper()
	ap, err := netip.ParseAddrPort(s.Addr())
	if err != nil {
		tb.Fatalf("sink address %q: %v", s.Addr(), err)
	}
	return ap.Addr(), int(ap.Port())
}

// sinkOptions are DialOptions for delivering to sink under host name
// "localhost" (a name its certificate covers).
func sinkOptions(tb testing.TB, s *smtpsink.Sink) egress.DialOptions {
	addr, port := sinkAddr(tb, s)
	return egress.DialOptions{
		Hosts:    []egress.MXHost{{Name: "localhost", Addrs: []netip.Addr{addr}}},
		Port:     port,
		Config:   loopbackConfig(),
		Hostname: "mta.test",
	}
}

func dial(tb testing.TB, opts egress.DialOptions) *egress.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	c, err := egress.Dial(ctx, opts)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func dialErr(tb testing.TB, opts egress.DialOptions) (egress.Response, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	c, err := egress.Dial(ctx, opts)
	if err == nil {
		_ = c.Close()
		tb.Fatalf("Dial succeeded, want an error")
	}
	resp, ok := egress.ResponseOf(err)
	if !ok {
		tb.Fatalf("Dial error %v carries no Response", err)
	}
	return resp, err
}

func message(id string) []byte {
	return []byte("Message-ID: <" + id + "@test>\r\nFrom: a@example.com\r\nSubject: test\r\n\r\nHello.\r\n")
}

func send(tb testing.TB, c *egress.Conn, env egress.Envelope) egress.SendResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	res, err := c.Send(ctx, env)
	if err != nil {
		tb.Fatalf("Send: %v", err)
	}
	if len(res.Recipients) != len(env.Recipients) {
		tb.Fatalf("Send: %d results for %d recipients", len(res.Recipients), len(env.Recipients))
	}
	return res
}

func wantCode(tb testing.TB, what string, r egress.Response, code int, enh string) {
	tb.Helper()
	if r.Code != code || r.Enhanced != enh {
		tb.Errorf("%s: got %q, want %d %s", what, r.String(), code, enh)
	}
}

func TestSendMultipleRecipients(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	c := dial(t, sinkOptions(t, sink))

	info := c.Info()
	addr, port := sinkAddr(t, sink)
	if info.Source != egress.DefaultSourceName || info.Host != "localhost" ||
		info.Addr != netip.AddrPortFrom(addr, uint16(port)) || info.EHLOName != "mta.test" || info.TLS != nil {
		t.Errorf("Info = %+v", info)
	}
	if info.LocalAddr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("LocalAddr = %v", info.LocalAddr)
	}
	if info.Banner.Code != 220 || !strings.Contains(info.Banner.Text, sink.Hostname()) {
		t.Errorf("Banner = %q", info.Banner)
	}
	if _, ok := c.Extension("pipelining"); !ok {
		t.Errorf("PIPELINING not seen in %v", c.Extensions())
	}

	rcpts := []string{"a@example.com", "b@example.net", "c@example.org"}
	data := message("multi")
	res := send(t, c, egress.Envelope{Sender: "sender@example.com", Recipients: rcpts, Data: data})
	for i, r := range res.Recipients {
		wantCode(t, rcpts[i], r, 250, "2.0.0")
		if r.Text != "OK: queued as S1" || r.Command != ".\r\n" {
			t.Errorf("%s: %+v", rcpts[i], r)
		}
		if !r.Success() || r.Transient() || r.Permanent() || r.Internal() {
			t.Errorf("%s: classification of %q", rcpts[i], r)
		}
		wantCode(t, "RCPT "+rcpts[i], res.Rcpt[i], 250, "2.0.0")
		if res.Rcpt[i].Command != "RCPT TO:<"+rcpts[i]+">\r\n" {
			t.Errorf("RCPT command %q", res.Rcpt[i].Command)
		}
	}
	if !strings.HasPrefix(res.Mail.Command, "MAIL FROM:<sender@example.com>") || !res.Mail.Success() {
		t.Errorf("Mail = %+v", res.Mail)
	}
	if got := res.Data.String(); got != "250 2.0.0 OK: queued as S1" {
		t.Errorf("Data = %q", got)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink has %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "sender@example.com" || !slices.Equal(m.To, rcpts) || !bytes.Equal(m.Data, data) ||
		m.EHLO != "mta.test" || m.TLS {
		t.Errorf("sink got %+v", m)
	}
	if !c.Usable() || c.Deliveries() != 1 {
		t.Errorf("Usable=%v Deliveries=%d", c.Usable(), c.Deliveries())
	}
}

func TestSendPerRecipientFailures(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	c := dial(t, sinkOptions(t, sink))

	rcpts := []string{"ok@example.com", "tempfail@example.com", "permfail@example.com", "ok2@example.com"}
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: rcpts, Data: message("per-rcpt")})
	wantCode(t, "ok", res.Recipients[0], 250, "2.0.0")
	wantCode(t, "tempfail", res.Recipients[1], 451, "4.3.0")
	wantCode(t, "permfail", res.Recipients[2], 550, "5.1.1")
	wantCode(t, "ok2", res.Recipients[3], 250, "2.0.0")
	if !res.Recipients[1].Transient() || res.Recipients[1].Permanent() {
		t.Errorf("451 classified wrongly")
	}
	if !res.Recipients[2].Permanent() || res.Recipients[2].Transient() {
		t.Errorf("550 classified wrongly")
	}
	if res.Recipients[1].Command != "RCPT TO:<tempfail@example.com>\r\n" || res.Recipients[1].Text != "tempfail requested" {
		t.Errorf("tempfail response %+v", res.Recipients[1])
	}
	if got := res.Recipients[2].String(); got != "550 5.1.1 permfail requested" {
		t.Errorf("permfail String() = %q", got)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"ok@example.com", "ok2@example.com"}) {
		t.Fatalf("sink messages %+v", msgs)
	}
	if !c.Usable() {
		t.Fatal("connection not usable after a successful transaction")
	}
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"x@example.com"}, Data: message("next")})
	wantCode(t, "next message", res.Recipients[0], 250, "2.0.0")
}

func TestSendAllRecipientsRefused(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	c := dial(t, sinkOptions(t, sink))

	res := send(t, c, egress.Envelope{Sender: "s@example.com",
		Recipients: []string{"tempfail@example.com", "permfail@example.com"}, Data: message("none")})
	wantCode(t, "tempfail", res.Recipients[0], 451, "4.3.0")
	wantCode(t, "permfail", res.Recipients[1], 550, "5.1.1")
	if res.Data.Code != 0 {
		t.Errorf("Data = %q, want none", res.Data)
	}
	if sink.Count() != 0 {
		t.Errorf("sink accepted %d messages", sink.Count())
	}
	if !c.Usable() {
		t.Fatal("connection not usable after refused recipients (RSET)")
	}
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"ok@example.com"}, Data: message("after")})
	wantCode(t, "after RSET", res.Recipients[0], 250, "2.0.0")
	if sink.Count() != 1 || sink.Stats().Connections != 1 {
		t.Errorf("stats %+v", sink.Stats())
	}
}

func TestSendDataRefused(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageData, Code: 554,
		Enhanced: smtp.EnhancedCode{5, 7, 1}, Text: "spam detected", Times: 1})
	c := dial(t, sinkOptions(t, sink))

	rcpts := []string{"a@example.com", "permfail@example.com", "b@example.com"}
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: rcpts, Data: message("spam")})
	wantCode(t, "a", res.Recipients[0], 554, "5.7.1")
	wantCode(t, "permfail", res.Recipients[1], 550, "5.1.1")
	wantCode(t, "b", res.Recipients[2], 554, "5.7.1")
	if !res.Recipients[0].Permanent() || res.Recipients[0].Command != ".\r\n" || res.Data.Text != "spam detected" {
		t.Errorf("data refusal %+v", res.Recipients[0])
	}
	if !c.Usable() {
		t.Fatal("not usable after a refused message")
	}
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("ham")})
	wantCode(t, "next", res.Recipients[0], 250, "2.0.0")
}

func TestSendMailRefused(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageMail, Code: 451,
		Enhanced: smtp.EnhancedCode{4, 7, 1}, Text: "try later", Times: 1})
	c := dial(t, sinkOptions(t, sink))

	res := send(t, c, egress.Envelope{Sender: "s@example.com",
		Recipients: []string{"a@example.com", "b@example.com"}, Data: message("m")})
	for i, r := range res.Recipients {
		wantCode(t, "recipient "+strconv.Itoa(i), r, 451, "4.7.1")
		if !strings.HasPrefix(r.Command, "MAIL FROM:<s@example.com>") {
			t.Errorf("command %q", r.Command)
		}
	}
	if sink.Count() != 0 || !c.Usable() {
		t.Fatalf("count=%d usable=%v", sink.Count(), c.Usable())
	}
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("m2")})
	wantCode(t, "next", res.Recipients[0], 250, "2.0.0")
}

func TestSendDisconnectMidTransaction(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageDataStart, Action: smtpsink.Disconnect})
	c := dial(t, sinkOptions(t, sink))

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	res, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com",
		Recipients: []string{"a@example.com", "permfail@example.com"}, Data: bytes.Repeat([]byte("x"), 1<<20)})
	resp, ok := egress.ResponseOf(err)
	if !ok {
		t.Fatalf("Send error %v, want a *ResponseError", err)
	}
	if resp.Code != 400 || resp.Enhanced != "" || !resp.Internal() || !resp.Transient() ||
		!strings.HasPrefix(resp.Text, "KumoMTA internal: failed to send message to localhost/") {
		t.Errorf("failure response %+v", resp)
	}
	if res.Recipients[0] != resp {
		t.Errorf("accepted recipient got %+v, want %+v", res.Recipients[0], resp)
	}
	wantCode(t, "refused recipient keeps its reply", res.Recipients[1], 550, "5.1.1")
	if c.Usable() {
		t.Error("connection usable after the peer dropped it")
	}
	_, err = c.Send(ctx, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("x")})
	if !errors.Is(err, egress.ErrConnUnusable) {
		t.Errorf("Send on a broken connection: %v, want ErrConnUnusable", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestSendDisconnectAtRcpt(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := dial(t, sinkOptions(t, sink))
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	res, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com",
		Recipients: []string{"ok@example.com", "disconnect@example.com"}, Data: message("d")})
	resp, ok := egress.ResponseOf(err)
	if !ok || !resp.Transient() || !resp.Internal() {
		t.Fatalf("Send: %v", err)
	}
	for i, r := range res.Recipients {
		if r != resp {
			t.Errorf("recipient %d: %+v, want the failure", i, r)
		}
	}
	if resp.Command != "RCPT TO:<disconnect@example.com>\r\n" {
		t.Errorf("failure command %q", resp.Command)
	}
	if c.Usable() || sink.Count() != 0 {
		t.Errorf("usable=%v count=%d", c.Usable(), sink.Count())
	}
}

func TestSend421BreaksConnection(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Action: smtpsink.Disconnect, Code: 421,
		Enhanced: smtp.EnhancedCode{4, 4, 2}, Text: "closing"})
	c := dial(t, sinkOptions(t, sink))
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	res, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("x")})
	if err != nil {
		t.Fatalf("Send: %v (every recipient had a reply)", err)
	}
	wantCode(t, "421", res.Recipients[0], 421, "4.4.2")
	if res.Recipients[0].Internal() || c.Usable() {
		t.Errorf("response %+v usable=%v", res.Recipients[0], c.Usable())
	}
}

func TestSendTimeout(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageData, Action: smtpsink.Hang})
	opts := sinkOptions(t, sink)
	opts.Config.DataDotTimeout = 300 * time.Millisecond
	opts.Site = "unspecified->localhost@smtp_client"
	c := dial(t, opts)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	res, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("t")})
	elapsed := time.Since(start)
	resp, ok := egress.ResponseOf(err)
	if !ok {
		t.Fatalf("Send: %v", err)
	}
	if elapsed < 300*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("timed out after %v, want about 300ms", elapsed)
	}
	wantCode(t, "timeout", resp, 421, "4.4.2")
	want := "KumoMTA internal: failed to send message to unspecified->localhost@smtp_client localhost/"
	if !strings.HasPrefix(resp.Text, want) || !strings.Contains(resp.Text, `Timed Out waiting 300ms for response to "."`) ||
		resp.Command != ".\r\n" || !resp.Transient() {
		t.Errorf("timeout response %+v", resp)
	}
	if res.Recipients[0] != resp || c.Usable() {
		t.Errorf("recipient %+v usable=%v", res.Recipients[0], c.Usable())
	}
}

func TestSendContextCancel(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageData, Action: smtpsink.Hang})
	c := dial(t, sinkOptions(t, sink))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	res, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("c")})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("Send after %v: %v, want context.Canceled", time.Since(start), err)
	}
	if !res.Recipients[0].Transient() || !res.Recipients[0].Internal() || c.Usable() {
		t.Errorf("recipient %+v usable=%v", res.Recipients[0], c.Usable())
	}
}

func TestDialBannerFailures(t *testing.T) {
	cases := []struct {
		name  string
		fault smtpsink.Fault
		want  string
	}{
		{"hang", smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Hang}, "timed out after 200ms waiting for the banner"},
		{"garbage", smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Garbage}, "malformed reply"},
		{"421", smtpsink.Fault{Stage: smtpsink.StageConnect, Code: 421, Text: "too busy"}, "rejected: 421 4.0.0 too busy"},
		{"close", smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Disconnect}, "connection closed by peer"},
		{"ehlo", smtpsink.Fault{Stage: smtpsink.StageEHLO, Code: 554, Text: "no"}, "EHLO after banner"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := startSink(t, smtpsink.Options{})
			sink.MustAddFault(tc.fault)
			opts := sinkOptions(t, sink)
			opts.Config.BannerTimeout = 200 * time.Millisecond
			start := time.Now()
			resp, _ := dialErr(t, opts)
			if time.Since(start) > 3*time.Second {
				t.Errorf("Dial took %v", time.Since(start))
			}
			if resp.Code != 400 || resp.Enhanced != "" || !resp.Transient() ||
				!strings.HasPrefix(resp.Text, "KumoMTA internal: failed to connect to any candidate hosts: connect to localhost/127.0.0.1:") &&
					tc.name != "ehlo" {
				t.Errorf("response %q", resp)
			}
			if !strings.Contains(resp.Text, tc.want) {
				t.Errorf("response %q does not mention %q", resp, tc.want)
			}
		})
	}
}

func TestDialContextDeadline(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Hang})
	opts := sinkOptions(t, sink)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := egress.Dial(ctx, opts)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("Dial after %v: %v", time.Since(start), err)
	}
	if resp, ok := egress.ResponseOf(err); !ok || !resp.Transient() {
		t.Errorf("response %+v", resp)
	}
}

func TestTLSModes(t *testing.T) {
	type tc struct {
		name     string
		mode     shaping.TLSMode
		sinkTLS  bool
		trust    bool
		fault    *smtpsink.Fault
		wantTLS  bool   // delivered over TLS
		wantFail string // Dial fails with a response containing this
	}
	garbage := &smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage}
	cases := []tc{
		{name: "opportunistic verified", mode: shaping.Opportunistic, sinkTLS: true, trust: true, wantTLS: true},
		{name: "opportunistic untrusted", mode: shaping.Opportunistic, sinkTLS: true,
			wantFail: "TLS handshake with localhost/127.0.0.1:"},
		{name: "opportunistic broken handshake", mode: shaping.Opportunistic, sinkTLS: true, trust: true, fault: garbage,
			wantFail: "TLS handshake with localhost/127.0.0.1:"},
		{name: "opportunistic not offered", mode: shaping.Opportunistic},
		{name: "empty mode is opportunistic", mode: "", sinkTLS: true, trust: true, wantTLS: true},
		{name: "opportunistic insecure self-signed", mode: shaping.OpportunisticInsecure, sinkTLS: true, wantTLS: true},
		{name: "opportunistic insecure broken handshake", mode: shaping.OpportunisticInsecure, sinkTLS: true, fault: garbage,
			wantFail: "All failures are related to OpportunisticInsecure STARTTLS. Consider setting enable_tls=Disabled for this site. "},
		{name: "opportunistic insecure not offered", mode: shaping.OpportunisticInsecure},
		{name: "required verified", mode: shaping.Required, sinkTLS: true, trust: true, wantTLS: true},
		{name: "required untrusted", mode: shaping.Required, sinkTLS: true, wantFail: "certificate"},
		{name: "required not offered", mode: shaping.Required,
			wantFail: "tls policy is Required but STARTTLS is not advertised by localhost/127.0.0.1:"},
		{name: "required insecure self-signed", mode: shaping.RequiredInsecure, sinkTLS: true, wantTLS: true},
		{name: "required insecure not offered", mode: shaping.RequiredInsecure, wantFail: "STARTTLS is not advertised"},
		{name: "disabled", mode: shaping.Disabled, sinkTLS: true, trust: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := startSink(t, smtpsink.Options{TLS: tc.sinkTLS, Store: true})
			if tc.fault != nil {
				sink.MustAddFault(*tc.fault)
			}
			opts := sinkOptions(t, sink)
			opts.Config.EnableTLS = tc.mode
			if tc.trust {
				opts.TLSConfig = &tls.Config{RootCAs: sink.RootCAs()}
			}
			if tc.wantFail != "" {
				resp, _ := dialErr(t, opts)
				if resp.Code != 400 || !resp.Transient() || !strings.Contains(resp.Text, tc.wantFail) ||
					!strings.HasPrefix(resp.Text, "KumoMTA internal: failed to connect to any candidate hosts: ") {
					t.Errorf("response %q, want a transient failure mentioning %q", resp, tc.wantFail)
				}
				if sink.Count() != 0 {
					t.Errorf("sink accepted %d messages", sink.Count())
				}
				return
			}
			c := dial(t, opts)
			res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("tls")})
			wantCode(t, "delivery", res.Recipients[0], 250, "2.0.0")
			msgs := sink.Messages()
			if len(msgs) != 1 || msgs[0].TLS != tc.wantTLS {
				t.Fatalf("sink messages %+v, want TLS=%v", msgs, tc.wantTLS)
			}
			info := c.Info()
			if (info.TLS != nil) != tc.wantTLS {
				t.Fatalf("Info().TLS = %+v", info.TLS)
			}
			if tc.wantTLS {
				ti := info.TLS
				if ti.Version != "TLSv1_3" || !strings.HasPrefix(ti.Cipher, "TLS13_") ||
					!slices.Contains(ti.PeerSubjectName, "CN="+sink.Hostname()) ||
					ti.Verified != (tc.mode == shaping.Required || tc.mode == shaping.Opportunistic || tc.mode == "") {
					t.Errorf("TLS info %+v", ti)
				}
				if _, ok := c.Extension("STARTTLS"); ok {
					t.Error("STARTTLS still advertised after TLS: extensions not refreshed")
				}
			}
		})
	}
}

func TestConnectionReuse(t *testing.T) {
	sink := startSink(t, smtpsink.Options{KeyHeader: "Message-ID"})
	opts := sinkOptions(t, sink)
	opts.Config.MaxDeliveriesPerConnection = 5
	c := dial(t, opts)
	for i := range 5 {
		if c.Exhausted() {
			t.Fatalf("exhausted after %d deliveries", i)
		}
		res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"},
			Data: message("reuse-" + strconv.Itoa(i))})
		wantCode(t, "message "+strconv.Itoa(i), res.Recipients[0], 250, "2.0.0")
		if want := "OK: queued as S" + strconv.Itoa(i+1); res.Recipients[0].Text != want {
			t.Errorf("got %q, want %q", res.Recipients[0].Text, want)
		}
	}
	st := sink.Stats()
	if st.Connections != 1 || st.MaxPerConn != 5 || st.Messages != 5 || st.Duplicates != 0 {
		t.Errorf("sink stats %+v", st)
	}
	if c.Deliveries() != 5 || !c.Exhausted() || !c.Usable() {
		t.Errorf("Deliveries=%d Exhausted=%v Usable=%v", c.Deliveries(), c.Exhausted(), c.Usable())
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c.Usable() {
		t.Error("usable after Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	if err := sink.Wait(ctx, func(s smtpsink.Stats) bool { return s.ActiveConns == 0 }); err != nil {
		t.Errorf("sink still has the connection after QUIT: %v", err)
	}
}

func TestIdleConnectionClosedByPeer(t *testing.T) {
	sink := startSink(t, smtpsink.Options{ReadTimeout: 200 * time.Millisecond})
	c := dial(t, sinkOptions(t, sink))
	send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("1")})
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	if err := sink.Wait(ctx, func(s smtpsink.Stats) bool { return s.ActiveConns == 0 }); err != nil {
		t.Fatalf("sink did not close the idle connection: %v", err)
	}
	if c.Usable() {
		t.Error("Usable after the peer closed the idle connection")
	}
	_, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("2")})
	if !errors.Is(err, egress.ErrConnUnusable) {
		t.Errorf("Send: %v, want ErrConnUnusable", err)
	}
	if sink.Count() != 1 {
		t.Errorf("sink count %d", sink.Count())
	}
}

// twoSinks starts sinks on 127.0.0.1 and 127.0.0.2 with the same port.
func twoSinks(t *testing.T) (first, second *smtpsink.Sink, port int) {
	t.Helper()
	second = startSink(t, smtpsink.Options{Store: true, Hostname: "second.test"})
	_, port = sinkAddr(t, second)
	s, err := smtpsink.Start(smtpsink.Options{Store: true, Hostname: "first.test", Addr: "127.0.0.2:" + strconv.Itoa(port)})
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2:%d: %v", port, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, second, port
}

func TestSkipHostsWithDNS(t *testing.T) {
	first, second, port := twoSinks(t)
	srv := dnstest.Start(t, `
two.test.      MX 10 mx1.two.test.
two.test.      MX 20 mx2.two.test.
mx1.two.test.  A  127.0.0.2
mx2.two.test.  A  127.0.0.1
`)
	r := newResolver(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	plan, err := r.ResolveMX(ctx, "two.test")
	if err != nil {
		t.Fatalf("ResolveMX: %v", err)
	}
	opts := egress.DialOptions{Hosts: plan.Hosts, Port: port, Config: loopbackConfig(), Hostname: "mta.test"}

	// Without skip_hosts the preferred host is used.
	c := dial(t, opts)
	if c.Info().Host != "mx1.two.test" || c.Info().Banner.Text != "first.test ESMTP Service Ready" {
		t.Errorf("connected to %+v", c.Info())
	}
	_ = c.Close()

	opts.Config.SkipHosts = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	c = dial(t, opts)
	if c.Info().Host != "mx2.two.test" {
		t.Errorf("connected to %s, want mx2.two.test", c.Info().Host)
	}
	send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@two.test"}, Data: message("skip")})
	if second.Count() != 1 || first.Count() != 0 || first.Stats().Connections != 1 {
		t.Errorf("first %+v second %+v", first.Stats(), second.Stats())
	}

	opts.Config.SkipHosts = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	resp, err := dialErr(t, opts)
	if !errors.Is(err, egress.ErrAllHostsSkipped) ||
		resp.String() != "451 4.4.4 KumoMTA internal: MX consisted solely of hosts on the skip_hosts list" {
		t.Errorf("all skipped: %v", err)
	}
}

func TestFirstHostRefusesConnection(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	addr, port := sinkAddr(t, sink)
	opts := egress.DialOptions{
		Hosts: []egress.MXHost{
			{Name: "down.test", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.3")}},
			{Name: "noaddr.test", Err: errors.New("no address")},
			{Name: "up.test", Addrs: []netip.Addr{addr}},
		},
		Port: port, Config: loopbackConfig(), Hostname: "mta.test",
	}
	c := dial(t, opts)
	if c.Info().Host != "up.test" {
		t.Fatalf("connected to %s", c.Info().Host)
	}
	send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("second")})
	if sink.Count() != 1 {
		t.Errorf("count %d", sink.Count())
	}

	// Every candidate refuses: one failure per candidate, joined.
	opts.Hosts = []egress.MXHost{
		{Name: "down1.test", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.3")}},
		{Name: "down2.test", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.4")}},
	}
	resp, _ := dialErr(t, opts)
	p := strconv.Itoa(port)
	want := "400 KumoMTA internal: failed to connect to any candidate hosts: connect to down1.test/127.0.0.3:" + p +
		" and read initial banner: "
	if !strings.HasPrefix(resp.String(), want) || !strings.Contains(resp.Text, ", connect to down2.test/127.0.0.4:"+p) ||
		!strings.Contains(resp.Text, "connection refused") {
		t.Errorf("response %q", resp)
	}
}

func TestProhibitedHosts(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	opts := sinkOptions(t, sink)
	for _, cfg := range []shaping.PathConfig{shaping.Default(), {}} {
		opts.Config = cfg
		resp, err := dialErr(t, opts)
		if !errors.Is(err, egress.ErrProhibitedHost) || resp.Code != 550 || resp.Enhanced != "5.4.4" || !resp.Permanent() ||
			!strings.HasPrefix(resp.Text, "localhost/127.0.0.1 is on the list of prohibited_hosts [127.0.0.0/8, ::1/128") {
			t.Errorf("Dial to 127.0.0.1 with the default prohibited_hosts: %v", err)
		}
	}
	// One prohibited address refuses the whole destination, as in KumoMTA.
	opts = sinkOptions(t, sink)
	opts.Config.ProhibitedHosts = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	opts.Hosts = append(opts.Hosts, egress.MXHost{Name: "internal.test", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.3")}})
	if _, err := dialErr(t, opts); !errors.Is(err, egress.ErrProhibitedHost) {
		t.Errorf("Dial: %v", err)
	}
	if n := sink.Stats().Connections; n != 0 {
		t.Errorf("sink saw %d connections", n)
	}
	opts.Hosts = []egress.MXHost{{Name: "x.test", Err: errors.New("lookup failed")}}
	resp, err := dialErr(t, opts)
	if !errors.Is(err, egress.ErrNoAddresses) || resp.String() != "451 4.4.4 MX didn't resolve to any hosts" {
		t.Errorf("no addresses: %v", err)
	}
}

func TestByteExactData(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	c := dial(t, sinkOptions(t, sink))
	cases := map[string]struct{ in, want string }{
		"dots": {
			in: ".leading dot\r\nSubject: x\r\n\r\n.\r\n..\r\n...three\r\nmiddle . dot\r\n.\r\n" +
				"line\r\n. \r\n.\r\n",
		},
		"no final CRLF": {in: "Subject: y\r\n\r\n.no newline", want: "Subject: y\r\n\r\n.no newline\r\n"},
		"bare CR kept":  {in: "Subject: z\r\n\r\nA\rB\r\n.\rC\r\n"},
		"8bit":          {in: "Subject: \xc3\xa9t\xc3\xa9\r\n\r\n\xff\xfe\r\n"},
		"long lines":    {in: "Subject: l\r\n\r\n" + strings.Repeat("."+strings.Repeat("x", 997)+"\r\n", 300)},
	}
	n := 0
	for name, tc := range cases {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: []byte(tc.in)})
		wantCode(t, name, res.Recipients[0], 250, "2.0.0")
		n++
		msgs := sink.Messages()
		if len(msgs) != n {
			t.Fatalf("%s: sink has %d messages", name, len(msgs))
		}
		if got := string(msgs[n-1].Data); got != want {
			t.Errorf("%s: sink received %q, want %q", name, got, want)
		}
	}
}

func TestSMTPUTF8(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	c := dial(t, sinkOptions(t, sink))
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"üser@exämple.com"}, Data: message("u")})
	wantCode(t, "utf8", res.Recipients[0], 250, "2.0.0")
	if !strings.Contains(res.Mail.Command, " SMTPUTF8") {
		t.Errorf("MAIL command %q lacks SMTPUTF8", res.Mail.Command)
	}
	if m := sink.Messages(); len(m) != 1 || m[0].To[0] != "üser@exämple.com" {
		t.Errorf("sink %+v", m)
	}

	plain := startSink(t, smtpsink.Options{Configure: func(s *smtp.Server) { s.EnableSMTPUTF8 = false }})
	c = dial(t, sinkOptions(t, plain))
	res = send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"üser@exämple.com", "a@example.com"},
		Data: message("u")})
	for _, r := range res.Recipients {
		if r.String() != "554 5.6.7 KumoMTA internal: envelope is 8bit, destination does not support SMTPUTF8." {
			t.Errorf("got %q", r)
		}
	}
	if res.Mail.Code != 0 || plain.Count() != 0 || c.Deliveries() != 0 || !c.Usable() {
		t.Errorf("mail=%+v count=%d deliveries=%d", res.Mail, plain.Count(), c.Deliveries())
	}
}

func TestSizeRefusedAtMail(t *testing.T) {
	sink := startSink(t, smtpsink.Options{MaxMessageBytes: 100})
	c := dial(t, sinkOptions(t, sink))
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"},
		Data: bytes.Repeat([]byte("0123456789\r\n"), 20)})
	if !strings.HasSuffix(res.Mail.Command, " SIZE=240\r\n") || res.Recipients[0].Code != 552 || !res.Recipients[0].Permanent() {
		t.Errorf("mail %+v recipient %+v", res.Mail, res.Recipients[0])
	}
	if !c.Usable() {
		t.Error("not usable after a refused MAIL")
	}
}

func TestInvalidAddresses(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	c := dial(t, sinkOptions(t, sink))
	res := send(t, c, egress.Envelope{Sender: "s@example.com",
		Recipients: []string{"bad\r\nRCPT TO:<x@evil.test>", "", "ok@example.com"}, Data: message("i")})
	wantCode(t, "CRLF", res.Recipients[0], 501, "5.1.3")
	wantCode(t, "empty", res.Recipients[1], 501, "5.1.3")
	wantCode(t, "ok", res.Recipients[2], 250, "2.0.0")
	if !res.Recipients[0].Internal() || res.Rcpt[0].Code != 0 {
		t.Errorf("%+v %+v", res.Recipients[0], res.Rcpt[0])
	}
	if m := sink.Messages(); len(m) != 1 || !slices.Equal(m[0].To, []string{"ok@example.com"}) {
		t.Errorf("sink %+v", m)
	}
	res = send(t, c, egress.Envelope{Sender: "s>@example.com", Recipients: []string{"a@example.com"}, Data: message("j")})
	wantCode(t, "sender", res.Recipients[0], 501, "5.1.7")
	ctx := context.Background()
	if _, err := c.Send(ctx, egress.Envelope{Sender: "s@example.com"}); err == nil || errors.Is(err, egress.ErrConnUnusable) {
		t.Errorf("Send without recipients: %v", err)
	}
	if !c.Usable() {
		t.Error("not usable")
	}
}

func TestSourceAddressAndEHLO(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	src, err := egress.NewSource(egress.SourceOptions{Name: "ip-5",
		SourceAddress: netip.MustParseAddr("127.0.0.5"), EHLODomain: "src.example"})
	if err != nil {
		t.Fatal(err)
	}
	opts := sinkOptions(t, sink)
	opts.Source = src
	c := dial(t, opts)
	send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("src")})
	m := sink.Messages()
	if len(m) != 1 || !strings.HasPrefix(m[0].RemoteAddr, "127.0.0.5:") || m[0].EHLO != "src.example" {
		t.Errorf("sink saw %+v", m)
	}
	if info := c.Info(); info.Source != "ip-5" || info.LocalAddr.Addr() != netip.MustParseAddr("127.0.0.5") ||
		info.EHLOName != "src.example" {
		t.Errorf("info %+v", info)
	}

	// The path's ehlo_domain wins over the source's.
	opts.Config.EHLODomain = "path.example"
	c = dial(t, opts)
	if c.Info().EHLOName != "path.example" {
		t.Errorf("EHLO name %q", c.Info().EHLOName)
	}

	// A source address that no interface has.
	unplumbed, err := egress.NewSource(egress.SourceOptions{Name: "ghost", SourceAddress: netip.MustParseAddr("192.0.2.55")})
	if err != nil {
		t.Fatal(err)
	}
	opts.Source = unplumbed
	resp, _ := dialErr(t, opts)
	if !strings.Contains(resp.Text, "All failures are related to having an unplumbed source address. "+
		"Are the network interfaces provisioned correctly? ") || !strings.Contains(resp.Text, "bind 192.0.2.55 for ghost failed") {
		t.Errorf("unplumbed: %q", resp)
	}

	v6, _ := egress.NewSource(egress.SourceOptions{Name: "v6", SourceAddress: netip.MustParseAddr("::1")})
	opts.Source = v6
	if resp, _ := dialErr(t, opts); !strings.Contains(resp.Text, "different address families") {
		t.Errorf("family mismatch: %q", resp)
	}

	if _, err := egress.NewSource(egress.SourceOptions{EHLODomain: "bad name"}); err == nil {
		t.Error("NewSource accepted an EHLO name with a space")
	}
	if d := egress.DefaultSource(); d.Name() != "unspecified" || d.SourceAddress().IsValid() || d.EHLODomain() != "" {
		t.Errorf("DefaultSource %+v", d)
	}
}

func TestPortPrecedence(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	_, port := sinkAddr(t, sink)
	src, err := egress.NewSource(egress.SourceOptions{Name: "mapped", RemotePort: port})
	if err != nil {
		t.Fatal(err)
	}
	opts := sinkOptions(t, sink)
	opts.Port = 0
	opts.Config.SMTPPort = 1 // overridden by the source's remote_port
	opts.Source = src
	c := dial(t, opts)
	if int(c.Info().Addr.Port()) != port {
		t.Errorf("port %d", c.Info().Addr.Port())
	}
	opts.Source = nil
	opts.Config.SMTPPort = port
	c = dial(t, opts)
	if int(c.Info().Addr.Port()) != port {
		t.Errorf("port %d", c.Info().Addr.Port())
	}
}
