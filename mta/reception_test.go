package mta_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

func openBadger(t *testing.T, dir string) spool.Spool {
	t.Helper()
	s, err := badgerspool.Open(dir, badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The 250 reply must come only after data and meta are durable: every
// "stored" event is recorded before the client sees the reply.
func TestReplyAfterDurableStore(t *testing.T) {
	dir := t.TempDir()
	order := &orderLog{}
	data := &recordingSpool{Spool: openBadger(t, dir+"/data"), name: "data", log: order}
	meta := &recordingSpool{Spool: openBadger(t, dir+"/meta"), name: "meta", log: order}
	ts := startServer(t, data, meta)

	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	ids := sendMail(t, rc, "sender@example.com", []string{"a@example.net", "b@example.org"}, testMessage("durable", "hello"))
	order.add("replied")

	if len(ids) != 2 {
		t.Fatalf("want one id per recipient, got %v", ids)
	}
	order.mu.Lock()
	events := append([]string(nil), order.events...)
	order.mu.Unlock()
	replied := len(events) - 1
	if events[replied] != "replied" {
		t.Fatalf("reply recorded before last store: %v", events)
	}
	stored := map[string]bool{}
	for _, e := range events[:replied] {
		stored[e] = true
	}
	for _, id := range ids {
		for _, sp := range []string{"data", "meta"} {
			if want := "stored " + sp + " " + id; !stored[want] {
				t.Errorf("%q not recorded before the 250 reply; events %v", want, events)
			}
		}
	}
	// The two recipients share one stored body (one data record more
	// than the two messages' own), also stored before the reply.
	if n := len(stored); n != 5 {
		t.Errorf("want 5 stores (2 metas, 2 own data records, 1 shared body) before the reply, got %d: %v", n, events)
	}

	// And the message's content is the received one with trace headers
	// prepended.
	id, _ := spool.ParseID(ids[0])
	info, err := ts.srv.InspectMessage(context.Background(), id, true)
	if err != nil {
		t.Fatal(err)
	}
	s := string(info.Data)
	if !strings.HasPrefix(s, "X-KumoRef: ") || !strings.Contains(s, "\r\nReceived: from client.test (client.test [127.0.0.1])\r\n\tby mx.test (mtakit) with ESMTP id "+ids[0]) {
		t.Errorf("unexpected trace headers:\n%s", s)
	}
	if !strings.HasSuffix(s, testMessage("durable", "hello")) {
		t.Errorf("message body changed:\n%s", s)
	}
	ref := strings.TrimSpace(strings.SplitN(strings.TrimPrefix(s, "X-KumoRef: "), "\r\n", 2)[0])
	dec, err := base64.StdEncoding.DecodeString(ref)
	if err != nil || string(dec) != `{"_@_":"\\_/","recipient":"a@example.net"}` {
		t.Errorf("X-KumoRef decodes to %q (%v)", dec, err)
	}
}

func TestReceptionLogRecord(t *testing.T) {
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.LogHeaders = []string{"Subject"}
		o.LogMeta = []string{"received_from"}
	})
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	ids := sendMail(t, rc, "sender@example.com", []string{"User@Example.NET"}, testMessage("logged", "body"))

	recs := ts.sink.OfType(logs.Reception)
	if len(recs) != 1 {
		t.Fatalf("want 1 Reception record, got %d", len(recs))
	}
	r := recs[0]
	if r.ID != ids[0] || r.Sender != "sender@example.com" || len(r.Recipient) != 1 || r.Recipient[0] != "User@Example.NET" {
		t.Errorf("envelope fields: %+v", r)
	}
	if r.Queue != "example.net" || r.Site != "" {
		t.Errorf("queue %q site %q", r.Queue, r.Site)
	}
	if r.Response.Code != 250 || r.Response.EnhancedCode == nil || *r.Response.EnhancedCode != (logs.EnhancedCode{Class: 2}) {
		t.Errorf("response %+v", r.Response)
	}
	if r.PeerAddress == nil || r.PeerAddress.Name != "client.test" || r.PeerAddress.Addr != "127.0.0.1" {
		t.Errorf("peer %+v", r.PeerAddress)
	}
	if r.ReceptionProtocol == nil || *r.ReceptionProtocol != "ESMTP" {
		t.Errorf("reception_protocol %v", r.ReceptionProtocol)
	}
	if r.Headers["Subject"] != "logged" {
		t.Errorf("headers %v", r.Headers)
	}
	if v, _ := r.Meta["received_from"].(string); !strings.HasPrefix(v, "127.0.0.1:") {
		t.Errorf("meta %v", r.Meta)
	}
	id, _ := spool.ParseID(r.ID)
	if r.Created != id.Time().Unix() || r.Timestamp < r.Created || r.Size <= int64(len(testMessage("logged", "body"))) {
		t.Errorf("times/size: created %d ts %d size %d", r.Created, r.Timestamp, r.Size)
	}
	if r.SessionID == "" || r.NodeID == "" {
		t.Errorf("session/node id missing")
	}
}

// A restarted server finds every acknowledged message in its queues.
func TestRestartRecoversSpool(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"))
	acked := map[string]bool{}
	for c := 0; c < 5; c++ {
		rc := dialRaw(t, ts.addr)
		ehlo(rc)
		for i := 0; i < 10; i++ {
			for _, id := range sendMail(t, rc, "s@example.com", []string{"r@dest.example"}, testMessage("m", "x")) {
				acked[id] = true
			}
		}
	}
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	ts2 := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"))
	if n := ts2.srv.QueuedCount(); n != len(acked) {
		t.Fatalf("recovered %d messages, want %d", n, len(acked))
	}
	for _, id := range ts2.srv.QueuedIDs("dest.example") {
		delete(acked, id.String())
	}
	if len(acked) != 0 {
		t.Fatalf("not recovered: %v", acked)
	}
}

func TestRelayDecisions(t *testing.T) {
	domains := listener.DomainMap{
		"relay.example":    {RelayTo: true},
		"bounce.example":   {LogOOB: listener.LogThenRelay},
		"fbl.example":      {LogARF: listener.LogThenDrop},
		"sender.example":   {RelayFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		"*.wild.example":   {RelayTo: true},
		"www.wild.example": {},
	}
	tests := []struct {
		name      string
		relayHost bool
		from, to  string
		want      int
	}{
		{"relay host may send anywhere", true, "a@any.example", "b@elsewhere.example", 250},
		{"unknown domain refused", false, "a@any.example", "b@elsewhere.example", 550},
		{"relay_to domain accepted", false, "a@any.example", "b@relay.example", 250},
		{"log_oob domain accepted", false, "a@any.example", "b@bounce.example", 250},
		{"log_arf domain accepted", false, "a@any.example", "b@fbl.example", 250},
		{"relay_from holds peer", false, "a@sender.example", "b@elsewhere.example", 250},
		{"wildcard matches subdomain", false, "a@any.example", "b@mx.wild.example", 250},
		{"wildcard does not match its base", false, "a@any.example", "b@wild.example", 550},
		{"explicit entry beats wildcard", false, "a@any.example", "b@www.wild.example", 550},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(_ *mta.Options, c *listener.Config) {
				c.Domains = domains
				if !tc.relayHost {
					c.RelayHosts = []netip.Prefix{}
				}
			})
			rc := dialRaw(t, ts.addr)
			ehlo(rc)
			rc.expectCmd("MAIL FROM:<"+tc.from+">", 250)
			code, msg := rc.cmd("RCPT TO:<" + tc.to + ">")
			if code != tc.want {
				t.Fatalf("RCPT got %d %q, want %d", code, msg, tc.want)
			}
			if code == 550 {
				if msg != "5.7.1 relaying not permitted" {
					t.Errorf("refusal text %q", msg)
				}
				if rej := ts.sink.OfType(logs.Rejection); len(rej) != 1 || rej[0].Response.Code != 550 {
					t.Errorf("want one Rejection record, got %+v", rej)
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	long := strings.Repeat("x", 999)
	tests := []struct {
		name   string
		cfg    func(*listener.Config)
		script func(t *testing.T, rc *rawConn)
	}{
		{"unknown command", nil, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("FROB nicate", 500)
			rc.expectCmd("NOOP", 250) // session still usable
		}},
		{"malformed MAIL", nil, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:bogus address", 501)
			rc.expectCmd("MAIL FROM:<no-at-sign>", 501)
		}},
		{"RCPT before MAIL", nil, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("RCPT TO:<a@example.com>", 502)
		}},
		{"recipient with port", nil, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<a@example.com>", 250)
			rc.expectCmd("RCPT TO:<b@example.com:25>", 501)
		}},
		{"command line too long", nil, func(t *testing.T, rc *rawConn) {
			rc.send("NOOP " + strings.Repeat("a", 3000) + "\r\n")
			rc.expect(500)
			if !rc.closed() {
				t.Error("connection left open after an over-long line")
			}
		}},
		{"data line too long", nil, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<a@example.com>", 250)
			rc.expectCmd("RCPT TO:<b@example.com>", 250)
			rc.expectCmd("DATA", 354)
			rc.send("Subject: x\r\n\r\n" + long + "\r\n.\r\n")
			if msg := rc.expect(552); !strings.Contains(msg, "longer than 998") {
				t.Errorf("reply %q", msg)
			}
		}},
		{"SIZE parameter over limit", func(c *listener.Config) { c.MaxMessageSize = 1000 }, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<a@example.com> SIZE=5000", 552)
		}},
		{"message over size", func(c *listener.Config) { c.MaxMessageSize = 1000 }, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<a@example.com>", 250)
			rc.expectCmd("RCPT TO:<b@example.com>", 250)
			rc.expectCmd("DATA", 354)
			rc.send("Subject: x\r\n\r\n" + strings.Repeat(strings.Repeat("y", 70)+"\r\n", 30) + ".\r\n")
			rc.expect(552)
			rc.expectCmd("NOOP", 250)
		}},
		{"too many recipients", func(c *listener.Config) { c.MaxRecipients = 2 }, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<a@example.com>", 250)
			rc.expectCmd("RCPT TO:<b@example.com>", 250)
			rc.expectCmd("RCPT TO:<c@example.com>", 250)
			rc.expectCmd("RCPT TO:<d@example.com>", 452)
		}},
		{"unknown recipient domain", func(c *listener.Config) { c.RelayHosts = []netip.Prefix{} }, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<a@example.com>", 250)
			rc.expectCmd("RCPT TO:<b@unknown.example>", 550)
			rc.expectCmd("DATA", 502)
		}},
		{"non-ASCII address without SMTPUTF8", nil, func(t *testing.T, rc *rawConn) {
			rc.expectCmd("MAIL FROM:<jörg@example.com>", 553)
			rc.expectCmd("MAIL FROM:<jörg@example.com> SMTPUTF8", 250)
			rc.expectCmd("RCPT TO:<müller@example.com>", 250)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, meta := spool.NewMemory(), spool.NewMemory()
			ts := startServer(t, data, meta, func(_ *mta.Options, c *listener.Config) {
				if tc.cfg != nil {
					tc.cfg(c)
				}
			})
			rc := dialRaw(t, ts.addr)
			ehlo(rc)
			tc.script(t, rc)
			if n := countSpool(t, data) + countSpool(t, meta); n != 0 {
				t.Errorf("%d entries stored after refused input", n)
			}
		})
	}
}

// SMTP smuggling: every end-of-data look-alike that another MTA might
// honour is refused as a whole, so no second message can be injected.
func TestSmugglingRefused(t *testing.T) {
	variants := map[string]string{
		"bare LF dot bare LF": "\n.\n",
		"bare LF dot CRLF":    "\n.\r\n",
		"CRLF dot bare LF":    "\r\n.\n",
		"bare CR dot bare CR": "\r.\r",
		"bare CR dot CRLF":    "\r.\r\n",
		"bare LF in a header": "\nX-Injected: 1",
		"CR LF CR LF mix":     "\r\n\r.\r\n",
	}
	for name, seq := range variants {
		t.Run(name, func(t *testing.T) {
			data, meta := spool.NewMemory(), spool.NewMemory()
			ts := startServer(t, data, meta)
			rc := dialRaw(t, ts.addr)
			ehlo(rc)
			rc.expectCmd("MAIL FROM:<a@example.com>", 250)
			rc.expectCmd("RCPT TO:<b@example.com>", 250)
			rc.expectCmd("DATA", 354)
			rc.send("Subject: first\r\n\r\nbody" + seq +
				"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")
			code, msg := rc.reply()
			if code != 552 || !strings.Contains(msg, "bare CR or LF") {
				t.Fatalf("got %d %q, want 552 bare CR/LF refusal", code, msg)
			}
			rc.expectCmd("NOOP", 250)
			if n := countSpool(t, data); n != 0 {
				t.Fatalf("%d messages stored", n)
			}
		})
	}
}

// A line that starts with ".<CR>" keeps its CR once the period is gone
// (RFC 5321 section 4.5.2), so "<CRLF>.<CR>" is refused as a bare CR like
// any other. go-smtp v0.25.1 dropped the CR, and the message was stored
// without it; internal/smtpd fixes that.
func TestDotBareCRIsRefused(t *testing.T) {
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta)
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	rc.expectCmd("MAIL FROM:<a@example.com>", 250)
	rc.expectCmd("RCPT TO:<b@example.com>", 250)
	rc.expectCmd("DATA", 354)
	rc.send("Subject: first\r\n\r\nbody\r\n.\rMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")
	if code, msg := rc.reply(); code != 552 || !strings.Contains(msg, "bare CR or LF") {
		t.Fatalf("got %d %q, want the 552 bare CR refusal", code, msg)
	}
	rc.expectCmd("NOOP", 250)
	if n := countSpool(t, data); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestSpoolFailureAnswers4xxAndKeepsNothing(t *testing.T) {
	data := spool.NewMemory()
	meta := &failingSpool{Spool: spool.NewMemory(), ok: 1} // second message's meta fails
	ts := startServer(t, data, meta)
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	rc.expectCmd("MAIL FROM:<a@example.com>", 250)
	rc.expectCmd("RCPT TO:<b@example.com>", 250)
	rc.expectCmd("RCPT TO:<c@example.com>", 250)
	rc.expectCmd("DATA", 354)
	rc.send(testMessage("fail", "x") + ".\r\n")
	if msg := rc.expect(451); !strings.HasPrefix(msg, "4.3.0") {
		t.Errorf("reply %q", msg)
	}
	if n := countSpool(t, data) + countSpool(t, meta); n != 0 {
		t.Fatalf("%d entries left after a failed store", n)
	}
	if ts.srv.QueuedCount() != 0 || len(ts.sink.OfType(logs.Reception)) != 0 {
		t.Fatal("failed message was queued or logged as received")
	}
}

func TestDisconnectMidDataStoresNothing(t *testing.T) {
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta)
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	rc.expectCmd("MAIL FROM:<a@example.com>", 250)
	rc.expectCmd("RCPT TO:<b@example.com>", 250)
	rc.expectCmd("DATA", 354)
	rc.send("Subject: cut\r\n\r\nhalf a mess")
	rc.c.Close()

	// A second, complete transaction proves the server has processed the
	// first connection's end.
	rc2 := dialRaw(t, ts.addr)
	ehlo(rc2)
	sendMail(t, rc2, "a@example.com", []string{"b@example.com"}, testMessage("ok", "x"))
	deadline := time.Now().Add(5 * time.Second)
	for countSpool(t, data) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countSpool(t, data); n != 1 {
		t.Fatalf("want only the complete message stored, got %d", n)
	}
}

func TestStartTLS(t *testing.T) {
	dir := t.TempDir()
	tlsCfg, err := listener.EnsureSelfSigned(dir+"/cert.pem", dir+"/key.pem", "mx.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(_ *mta.Options, c *listener.Config) { c.TLS = tlsCfg })

	c, err := smtp.DialStartTLS(ts.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("a@example.com", []string{"b@example.com"}, strings.NewReader(testMessage("tls", "secret"))); err != nil {
		t.Fatal(err)
	}
	recs := ts.sink.OfType(logs.Reception)
	if len(recs) != 1 || recs[0].TLSCipher == "" || recs[0].TLSProtocolVersion == "" {
		t.Fatalf("want a Reception record with TLS details, got %+v", recs)
	}
	id, _ := spool.ParseID(recs[0].ID)
	body, err := ts.data.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "with ESMTPS id") {
		t.Errorf("Received header does not record TLS:\n%s", body)
	}
}

func TestPolicyHook(t *testing.T) {
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.Policy.MessageReceived = func(_ context.Context, m *mta.Message) error {
			subj, _ := m.Header("Subject")
			switch subj {
			case "reject me":
				return mta.Reject(550, "5.7.1 not today")
			case "broken policy":
				return errors.New("lua exploded")
			}
			m.SetMeta(mta.MetaTenant, "acme")
			m.SetMeta(mta.MetaCampaign, "spring")
			return nil
		}
	})
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	ids := sendMail(t, rc, "a@example.com", []string{"b@Dest.Example"}, testMessage("fine", "x"))
	if q := ts.srv.QueueSummary(); q["spring:acme@dest.example"] != 1 {
		t.Errorf("queues %v", q)
	}
	if r := ts.sink.OfType(logs.Reception); len(r) != 1 || r[0].ID != ids[0] || r[0].Queue != "spring:acme@dest.example" {
		t.Errorf("reception %+v", r)
	}

	for subj, want := range map[string]string{"reject me": "550 5.7.1 not today", "broken policy": "451 4.3.0"} {
		rc.expectCmd("MAIL FROM:<a@example.com>", 250)
		rc.expectCmd("RCPT TO:<b@example.com>", 250)
		rc.expectCmd("DATA", 354)
		rc.send("Subject: " + subj + "\r\n\r\nx\r\n.\r\n")
		code, msg := rc.reply()
		if got := strings.TrimSpace(strconv.Itoa(code) + " " + msg); !strings.HasPrefix(got, want) {
			t.Errorf("%s: got %q, want prefix %q", subj, got, want)
		}
	}
	if ts.srv.QueuedCount() != 1 {
		t.Errorf("rejected messages were queued")
	}
}
