package mta_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// With BatchByDomain, recipients at one domain travel in one transaction
// and each gets its own outcome.
func TestPerRecipientOutcomes(t *testing.T) {
	e := startE2E(t, 100*time.Millisecond, time.Hour, smtpsink.Options{Store: true}, nil)
	e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("later"), Code: 451, Enhanced: smtp.EnhancedCode{4, 2, 1}, Times: 1})
	// A second server on the same sink and DNS, batching by domain.
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, c *listener.Config) {
		c.BatchHandling = listener.BatchByDomain
		o.HoldDelivery = false
		o.Resolver = e.srvResolver(t)
		o.Shaper = e.shaper
		o.Classifier = bounce.DefaultClassifier()
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: 100 * time.Millisecond}, nil
		}
	})
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	ids := sendMail(t, rc, "s@example.com", []string{"ok@dest.test", "permfail@dest.test", "later@dest.test", "x@other.test"}, testMessage("batch", "x"))
	if len(ids) != 2 {
		t.Fatalf("want one message per domain, got %v", ids)
	}
	waitFor(t, "settled", 20*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })

	byRcpt := map[string][]logs.RecordType{}
	for _, r := range ts.sink.Records() {
		if r.Type != logs.Reception {
			byRcpt[r.Recipient[0]] = append(byRcpt[r.Recipient[0]], r.Type)
		}
	}
	want := map[string]string{
		"ok@dest.test":       "[Delivery]",
		"permfail@dest.test": "[Bounce]",
		"later@dest.test":    "[TransientFailure Delivery]",
		"x@other.test":       "[Delivery]",
	}
	for rcpt, w := range want {
		if got := toString(byRcpt[rcpt]); got != w {
			t.Errorf("%s: records %s, want %s", rcpt, got, w)
		}
	}
	// Three transactions: dest.test (three RCPTs, one accepted),
	// other.test, and the retry of later@.
	if n := e.sink.Count(); n != 3 {
		t.Errorf("sink accepted %d transactions, want 3", n)
	}
	for _, r := range ts.sink.OfType(logs.Bounce) {
		if r.BounceClassification != "InvalidRecipient" {
			t.Errorf("bounce classified %q, want InvalidRecipient", r.BounceClassification)
		}
	}
}

func toString(ts []logs.RecordType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// A bounce sends a DSN to the sender when enabled; the DSN itself has the
// null sender, and a message with the null sender never gets one.
func TestDSNOnBounce(t *testing.T) {
	e := startE2E(t, 100*time.Millisecond, time.Hour, smtpsink.Options{Store: true}, nil)
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = false
		o.Resolver = e.srvResolver(t)
		o.Shaper = e.shaper
		o.DSN = true
	})
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	sendMail(t, rc, "sender@dest.test", []string{"permfail@dest.test"}, testMessage("dsn", "x"))
	sendMail(t, rc, "", []string{"permfail2@dest.test"}, testMessage("nodsn", "x"))
	waitFor(t, "DSN delivered", 20*time.Second, func() bool { return ts.srv.QueuedCount() == 0 && e.sink.Count() >= 1 })
	time.Sleep(100 * time.Millisecond) // a wrongly generated second DSN would show up now
	msgs := e.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want exactly one DSN", len(msgs))
	}
	dsn := msgs[0]
	if dsn.From != "" || len(dsn.To) != 1 || dsn.To[0] != "sender@dest.test" {
		t.Errorf("DSN envelope from %q to %v", dsn.From, dsn.To)
	}
	body := string(dsn.Data)
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; permfail@dest.test", "Action: failed", "Status: 5.1.1"} {
		if !strings.Contains(body, want) {
			t.Errorf("DSN lacks %q:\n%s", want, body)
		}
	}
	if n := len(ts.sink.OfType(logs.Bounce)); n != 2 {
		t.Errorf("want 2 bounces, got %d", n)
	}
}

// STARTTLS is used when offered; the log records the TLS session, and one
// connection carries several messages.
func TestDeliveryOverTLSReusesConnection(t *testing.T) {
	e := startE2E(t, time.Second, time.Hour, smtpsink.Options{TLS: true}, func(pc *shaping.PathConfig) {
		pc.EnableTLS = shaping.OpportunisticInsecure // the sink's certificate names 127.0.0.1, not mx.dest.test
		pc.ConnectionLimit = 1
		pc.IdleTimeout = 2 * time.Second
	})
	e.srv.HoldDelivery()
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	for i := 0; i < 5; i++ {
		sendMail(t, rc, "s@example.com", []string{"r@dest.test"}, testMessage("tls", "x"))
	}
	e.srv.ReleaseDelivery()
	waitFor(t, "delivery", 20*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	st := e.sink.Stats()
	if st.TLSMessages != 5 || st.Connections != 1 || st.MaxPerConn != 5 {
		t.Errorf("sink stats %+v: want 5 TLS messages on one connection", st)
	}
	for _, d := range e.testServer.sink.OfType(logs.Delivery) {
		if d.TLSCipher == "" || d.TLSProtocolVersion == "" || len(d.TLSPeerSubjectName) == 0 || d.PeerAddress == nil {
			t.Errorf("delivery record lacks TLS details: %+v", d)
		}
	}
}

// max_message_rate paces deliveries on a ready queue.
func TestMaxMessageRate(t *testing.T) {
	e := startE2E(t, time.Second, time.Hour, smtpsink.Options{}, func(pc *shaping.PathConfig) {
		pc.MaxMessageRate = "20/s,max_burst=1"
	})
	e.srv.HoldDelivery()
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	const n = 11
	for i := 0; i < n; i++ {
		sendMail(t, rc, "s@example.com", []string{"r@dest.test"}, testMessage("rate", "x"))
	}
	start := time.Now()
	e.srv.ReleaseDelivery()
	waitFor(t, "delivery", 20*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	// 11 messages at 20/s with a burst of 1 need at least 10 intervals of 50 ms.
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Errorf("%d messages delivered in %v, faster than 20/s", n, d)
	}
	if got := e.sink.Count(); got != n {
		t.Errorf("sink got %d, want %d", got, n)
	}
}
