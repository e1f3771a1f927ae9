package mta_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// loopbackShaper is the default path config with loopback allowed and the
// sink's port, short timeouts and fast retries: what a test destination
// on 127.0.0.1 needs. edit, if set, adjusts it further.
func loopbackShaper(port int, edit func(*shaping.PathConfig)) shaping.Shaper {
	return shaping.PathFunc(func(context.Context, string, string, string) (shaping.PathConfig, error) {
		pc := shaping.Default()
		pc.ProhibitedHosts = []netip.Prefix{} // empty, not nil: nil means the default set
		pc.SMTPPort = port
		pc.ConnectTimeout, pc.BannerTimeout, pc.EHLOTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		pc.MailFromTimeout, pc.RcptToTimeout, pc.DataTimeout, pc.DataDotTimeout = 2*time.Second, 2*time.Second, 2*time.Second, 2*time.Second
		pc.IdleTimeout = 200 * time.Millisecond
		if edit != nil {
			edit(&pc)
		}
		return pc, nil
	})
}

// e2e is a server whose mail for *.test domains goes, by MX, to a sink.
type e2e struct {
	*testServer
	sink   *smtpsink.Sink
	dns    *dnstest.Server
	shaper shaping.Shaper
}

// srvResolver returns another resolver on the same test DNS server.
func (e *e2e) srvResolver(t *testing.T) *egress.Resolver {
	r, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{e.dns.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startE2E(t *testing.T, retry, maxAge time.Duration, sinkOpts smtpsink.Options, edit func(*shaping.PathConfig)) *e2e {
	t.Helper()
	sink, err := smtpsink.Start(sinkOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	_, portStr, _ := strings.Cut(sink.Addr(), "127.0.0.1:")
	var port int
	fmt.Sscan(portStr, &port)

	dns := dnstest.Start(t)
	dns.SetMX("dest.test", dnstest.MX{Pref: 10, Host: "mx.dest.test"})
	dns.SetA("mx.dest.test", "127.0.0.1")
	dns.SetMX("other.test", dnstest.MX{Pref: 10, Host: "mx.dest.test"})
	dns.SetNullMX("nullmx.test")
	res, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{dns.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	shaper := loopbackShaper(port, edit)
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = false
		o.Resolver = res
		o.Shaper = shaper
		o.TLS = sinkTLS(sink)
		o.LogHeaders = []string{"Subject"}
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: retry, MaxAge: maxAge}, nil
		}
	})
	return &e2e{testServer: ts, sink: sink, dns: dns, shaper: shaper}
}

// checkExactlyOnce asserts every id has exactly one final record, of the
// wanted type.
func checkExactlyOnce(t *testing.T, sink *memSink, want map[string]logs.RecordType) {
	t.Helper()
	f := finals(sink)
	for id, typ := range want {
		if got := f[id]; len(got) != 1 || got[0] != typ {
			t.Errorf("%s: final records %v, want exactly one %s", id, got, typ)
		}
	}
	if len(f) != len(want) {
		t.Errorf("%d messages have final records, want %d", len(f), len(want))
	}
}

func TestEndToEndDeliveryRetryBounce(t *testing.T) {
	e := startE2E(t, 100*time.Millisecond, time.Hour, smtpsink.Options{Store: true}, nil)
	// The first two attempts for retry@ get a 451 at RCPT.
	e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("retry"), Code: 451, Enhanced: smtp.EnhancedCode{4, 2, 1}, Text: "slow down", Times: 2})

	want := map[string]logs.RecordType{}
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	const n = 30
	for i := 0; i < n; i++ {
		for _, id := range sendMail(t, rc, "s@example.com", []string{fmt.Sprintf("r%d@dest.test", i)}, testMessage(fmt.Sprintf("m%d", i), "..dot-stuffed line\r\nbody")) {
			want[id] = logs.Delivery
		}
	}
	for _, id := range sendMail(t, rc, "s@example.com", []string{"retry@dest.test"}, testMessage("retry", "x")) {
		want[id] = logs.Delivery
	}
	for _, id := range sendMail(t, rc, "s@example.com", []string{"permfail@dest.test"}, testMessage("perm", "x")) {
		want[id] = logs.Bounce
	}
	for _, id := range sendMail(t, rc, "s@example.com", []string{"x@nullmx.test"}, testMessage("nullmx", "x")) {
		want[id] = logs.Bounce
	}
	for _, id := range sendMail(t, rc, "s@example.com", []string{"x@nxdomain.test"}, testMessage("nx", "x")) {
		want[id] = logs.Bounce
	}
	waitFor(t, "all messages settled", 20*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	checkExactlyOnce(t, e.testServer.sink, want)

	if got := e.sink.Count(); got != n+1 {
		t.Errorf("sink accepted %d messages, want %d", got, n+1)
	}
	if d := e.sink.Duplicates(); len(d) != 0 {
		t.Errorf("duplicates at the sink: %v", d)
	}
	// Byte-exact transparency: the dot-stuffed line arrives as sent.
	for _, m := range e.sink.Messages() {
		if strings.Contains(m.Key, "<m0@") && !strings.Contains(string(m.Data), "\r\n.dot-stuffed line\r\n") {
			t.Errorf("dot-stuffed line changed:\n%s", m.Data)
		}
	}
	tf := e.testServer.sink.OfType(logs.TransientFailure)
	if len(tf) != 2 || tf[0].Response.Code != 451 || tf[0].Site == "" || tf[0].PeerAddress == nil || tf[0].PeerAddress.Addr != "127.0.0.1" {
		t.Errorf("transient failures %+v", tf)
	}
	d := e.testServer.sink.OfType(logs.Delivery)
	if len(d) == 0 || d[0].Site != "unspecified->mx.dest.test@smtp_client" || d[0].DeliveryProtocol == nil || *d[0].DeliveryProtocol != "ESMTP" {
		t.Errorf("delivery record %+v", d[0])
	}
	for _, r := range d {
		if s, _ := r.Headers["Subject"].(string); !strings.HasPrefix(s, "m") && s != "retry" {
			t.Errorf("delivery record headers %v lack the Subject captured at reception", r.Headers)
		}
	}
}

func TestEndToEndExpiration(t *testing.T) {
	e := startE2E(t, 50*time.Millisecond, 400*time.Millisecond, smtpsink.Options{}, nil)
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	e.dns.SetRcode("servfail.test", dns.RcodeServerFailure)
	want := map[string]logs.RecordType{}
	for _, rcpt := range []string{"tempfail@dest.test", "x@servfail.test"} {
		for _, id := range sendMail(t, rc, "s@example.com", []string{rcpt}, testMessage("exp", "x")) {
			want[id] = logs.Expiration
		}
	}
	waitFor(t, "expiration", 20*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	checkExactlyOnce(t, e.testServer.sink, want)
	for _, r := range e.testServer.sink.OfType(logs.TransientFailure) {
		if r.Recipient[0] == "x@servfail.test" && !strings.HasPrefix(r.Response.Content, "KumoMTA internal: failed to resolve servfail.test") {
			t.Errorf("DNS failure response %q", r.Response.Content)
		}
	}
}

// Faults at the destination each cost a transient failure; the message is
// then delivered exactly once.
func TestEndToEndFaultsCostOneRetry(t *testing.T) {
	faults := []struct {
		name  string
		fault smtpsink.Fault
		tls   bool
	}{
		{"broken TLS handshake", smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage}, true},
		{"TLS handshake dropped", smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Disconnect}, true},
		{"garbage banner", smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Garbage}, false},
		{"close after banner", smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Disconnect, Code: 220}, false},
		{"disconnect at MAIL", smtpsink.Fault{Stage: smtpsink.StageMail, Action: smtpsink.Disconnect}, false},
		{"disconnect in DATA", smtpsink.Fault{Stage: smtpsink.StageDataStart, Action: smtpsink.Disconnect}, false},
		{"stall at RCPT", smtpsink.Fault{Stage: smtpsink.StageRcpt, Action: smtpsink.Hang}, false},
		{"stall after dot", smtpsink.Fault{Stage: smtpsink.StageData, Action: smtpsink.Hang}, false},
		{"421 at DATA end", smtpsink.Fault{Stage: smtpsink.StageData, Code: 421, Enhanced: smtp.EnhancedCode{4, 3, 2}}, false},
	}
	for _, tc := range faults {
		t.Run(tc.name, func(t *testing.T) {
			e := startE2E(t, 100*time.Millisecond, time.Hour, smtpsink.Options{HangLimit: 10 * time.Second, TLS: tc.tls}, func(pc *shaping.PathConfig) {
				pc.BannerTimeout, pc.RcptToTimeout, pc.DataDotTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
				pc.StartTLSTimeout = 500 * time.Millisecond
				if tc.tls {
					pc.EnableTLS = shaping.OpportunisticInsecure
				}
			})
			f := tc.fault
			f.Times = 1
			e.sink.MustAddFault(f)
			rc := dialRaw(t, e.addr)
			ehlo(rc)
			ids := sendMail(t, rc, "s@example.com", []string{"r@dest.test"}, testMessage("fault", "x"))
			waitFor(t, "delivery", 20*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
			checkExactlyOnce(t, e.testServer.sink, map[string]logs.RecordType{ids[0]: logs.Delivery})
			if n := len(e.testServer.sink.OfType(logs.TransientFailure)); n != 1 {
				t.Errorf("want one transient failure, got %d", n)
			}
		})
	}
}

// sinkTLS trusts the sink's self-signed certificate, if it has one.
func sinkTLS(s *smtpsink.Sink) *tls.Config {
	if pool := s.RootCAs(); pool != nil {
		return &tls.Config{RootCAs: pool}
	}
	return nil
}
