package mta_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// smuggled is the transaction an attacker hides after a fake end of data.
const smuggled = "MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
	"From: evil@example.com\r\nSubject: smuggled\r\n\r\nx\r\n"

// smugglingVariants are the end-of-data look-alikes of SEC Consult's SMTP
// smuggling research (December 2023) and its follow-ups. refused says
// what mtakit does with each sent with DATA: refuse the message (552, bare
// CR or LF, or NUL: see listener.readData), or take it as one message with
// the rest as body text. With DATA the dot handling comes first (only a
// leading period goes, RFC 5321 section 4.5.2, so "<CRLF>.<CR>" leaves a
// bare CR); with BDAT the bytes arrive as sent, so exactly those with a
// bare CR or LF are refused. bdatOnly marks sequences that hold a real
// end of data, look-alikes only inside BDAT.
var smugglingVariants = []struct {
	name     string
	seq      string
	refused  bool
	bdatOnly bool
}{
	{"LF.LF", "\n.\n", true, false},
	{"LF.CRLF", "\n.\r\n", true, false},
	{"CRLF.LF", "\r\n.\n", true, false},
	{"CR.CR", "\r.\r", true, false},
	{"CR.CRLF", "\r.\r\n", true, false},
	{"LF.CR", "\n.\r", true, false},
	{"CRLF.CR", "\r\n.\r", true, false},                   // the line ".<CR>MAIL ..." is "<CR>MAIL ..."
	{"CRLF.CR CRLF", "\r\n.\r\r\n", true, false},          // the line ".<CR>" is "<CR>"
	{"CRLF.CR CRLF.CRLF", "\r\n.\r\r\n.\r\n", true, true}, // with DATA: see TestDotCRLineThenEndOfData
	{"CRLF NUL.CRLF", "\r\n\x00.\r\n", true, false},       // NUL is refused: a hop that strips it would see an end
	{"CRLF.NUL CRLF", "\r\n.\x00\r\n", true, false},
	{"CRLF SP.CRLF", "\r\n .\r\n", false, false},
	{"CRLF.SP CRLF", "\r\n. \r\n", false, false},
	{"CRLF..CRLF", "\r\n..\r\n", false, false},
	{"CRLF.CRLF", "\r\n.\r\n", false, true},
}

// With DATA, "<CRLF>.<CR><CR><LF>.<CRLF>" is a line "<CR>" and then the end
// of data (go-smtp v0.25.1 read on and took what followed as body text).
// The message is refused for its bare CR, and the transaction the client
// pipelined after the end of data is a transaction of its own.
func TestDotCRLineThenEndOfData(t *testing.T) {
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta)
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	rc.expectCmd("MAIL FROM:<a@example.com>", 250)
	rc.expectCmd("RCPT TO:<b@example.com>", 250)
	rc.expectCmd("DATA", 354)
	rc.send("From: a@example.com\r\nSubject: first\r\n\r\nbody\r\n.\r\r\n.\r\n" + smuggled + ".\r\n")
	if code, text := rc.reply(); code != 552 || !strings.Contains(text, "bare CR or LF") {
		t.Fatalf("first message answered %d %q, want the 552 bare CR refusal", code, text)
	}
	rc.expect(250) // MAIL FROM:<evil@example.com>
	rc.expect(250) // RCPT TO:<victim@example.com>
	rc.expect(354) // DATA
	text := rc.expect(250)
	rc.expectCmd("NOOP", 250)

	ids, _ := strings.CutPrefix(text, "2.0.0 OK ids=")
	id, err := spool.ParseID(ids)
	if err != nil {
		t.Fatalf("reply %q: %v", text, err)
	}
	if n := countSpool(t, data); n != 1 {
		t.Fatalf("%d messages stored, want only the second", n)
	}
	body, err := data.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "Subject: smuggled\r\n") || strings.Contains(string(body), "first") {
		t.Fatalf("stored message is not the second transaction's:\n%q", body)
	}
	recs := ts.sink.OfType(logs.Reception)
	if len(recs) != 1 || recs[0].Sender != "evil@example.com" || len(recs[0].Recipient) != 1 || recs[0].Recipient[0] != "victim@example.com" {
		t.Fatalf("Reception records %+v", recs)
	}
}

// transfer is how a test message's data is sent.
type transfer int

const (
	viaDATA      transfer = iota
	viaBDAT               // one BDAT LAST chunk
	viaBDATSplit          // two chunks, split inside the look-alike sequence
)

func (tr transfer) String() string { return [...]string{"DATA", "BDAT", "BDAT-split"}[tr] }

// sendData sends msg as the data of the open transaction and returns the
// reply to its end.
func sendData(rc *rawConn, tr transfer, msg string, split int) (int, string) {
	rc.t.Helper()
	switch tr {
	case viaDATA:
		rc.expectCmd("DATA", 354)
		rc.send(msg + "\r\n.\r\n")
	case viaBDAT:
		rc.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
	case viaBDATSplit:
		rc.send(fmt.Sprintf("BDAT %d\r\n%s", split, msg[:split]))
		if code, text := rc.reply(); code != 250 {
			return code, text
		}
		rc.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)-split, msg[split:]))
	}
	return rc.reply()
}

// Every smuggling variant, sent with DATA, with BDAT, and with BDAT split
// inside the variant, is refused with a 552 or stored as exactly one
// message that holds the smuggled transaction as body text. Nothing is
// ever stored for the smuggled envelope, and the session stays in step.
func TestSmugglingVariants(t *testing.T) {
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta)
	n := 0
	for _, v := range smugglingVariants {
		for _, tr := range []transfer{viaDATA, viaBDAT, viaBDATSplit} {
			if v.bdatOnly && tr == viaDATA {
				continue
			}
			n++
			subject := fmt.Sprintf("smuggle-%d", n)
			t.Run(v.name+"/"+tr.String(), func(t *testing.T) {
				before := countSpool(t, data)
				rc := dialRaw(t, ts.addr)
				ehlo(rc)
				rc.expectCmd("MAIL FROM:<a@example.com>", 250)
				rc.expectCmd("RCPT TO:<b@example.com>", 250)
				head := "From: a@example.com\r\nSubject: " + subject + "\r\n\r\nbody"
				msg := head + v.seq + smuggled
				code, text := sendData(rc, tr, msg, len(head)+len(v.seq)/2+1)
				// The session is in step: the next command gets its own reply.
				rc.expectCmd("NOOP", 250)
				stored := countSpool(t, data) - before

				refused := v.refused
				if tr != viaDATA {
					refused = strings.ContainsAny(strings.ReplaceAll(v.seq, "\r\n", ""), "\r\n\x00")
				}
				if refused {
					if code != 552 || !(strings.Contains(text, "bare CR or LF") || strings.Contains(text, "NUL")) || stored != 0 {
						t.Fatalf("got %d %q and %d stored, want the 552 bare CR/LF or NUL refusal and nothing stored", code, text, stored)
					}
					return
				}
				if code != 250 || stored != 1 {
					t.Fatalf("got %d %q and %d stored, want one message accepted", code, text, stored)
				}
				ids, _ := strings.CutPrefix(text, "2.0.0 OK ids=")
				id, err := spool.ParseID(ids)
				if err != nil {
					t.Fatalf("reply %q: %v", text, err)
				}
				body, err := data.Load(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(body), "Subject: "+subject+"\r\n") || !strings.Contains(string(body), smuggled) {
					t.Fatalf("stored message does not hold the smuggled part as body:\n%q", body)
				}
			})
		}
	}
	// The smuggled envelope never became a message.
	for q := range ts.srv.QueueSummary() {
		if q != "example.com" {
			t.Errorf("unexpected queue %q", q)
		}
	}
	for _, r := range ts.sink.OfType(logs.Reception) {
		if r.Sender != "a@example.com" || len(r.Recipient) != 1 || r.Recipient[0] != "b@example.com" {
			t.Errorf("received %q -> %v", r.Sender, r.Recipient)
		}
	}
}

// The accepted look-alikes leave as they came: mtakit's delivery
// dot-stuffs the data, so the next hop (a go-smtp server here) also sees
// one message with the smuggled part as body, and no second message.
func TestSmugglingVariantsRelayedAsOneMessage(t *testing.T) {
	e := startE2E(t, 100*time.Millisecond, time.Hour, smtpsink.Options{Store: true}, nil)
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	want := map[string]logs.RecordType{}
	sent := 0
	for i, v := range smugglingVariants {
		if v.refused {
			continue
		}
		tr := viaDATA
		if v.bdatOnly {
			tr = viaBDAT
		}
		rc.expectCmd("MAIL FROM:<a@example.com>", 250)
		rc.expectCmd("RCPT TO:<r@dest.test>", 250)
		msg := fmt.Sprintf("From: a@example.com\r\nMessage-ID: <relay-%d@example.com>\r\nSubject: relay-%d\r\n\r\nbody%s%s", i, i, v.seq, smuggled)
		code, text := sendData(rc, tr, msg, 0)
		ids, ok := strings.CutPrefix(text, "2.0.0 OK ids=")
		if code != 250 || !ok {
			t.Fatalf("%s: got %d %q", v.name, code, text)
		}
		want[ids] = logs.Delivery
		sent++
	}
	waitFor(t, "delivery", 20*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	checkExactlyOnce(t, e.testServer.sink, want)
	msgs := e.sink.Messages()
	if len(msgs) != sent {
		t.Fatalf("the next hop got %d messages, want %d", len(msgs), sent)
	}
	for _, m := range msgs {
		if m.From != "a@example.com" || len(m.To) != 1 || m.To[0] != "r@dest.test" || !strings.Contains(string(m.Data), smuggled) {
			t.Errorf("next hop got %q -> %v:\n%q", m.From, m.To, m.Data)
		}
	}
}

// A client that is not a relay host cannot relay to a domain that is not
// ours, whatever it puts in the envelope: the recipient's domain is what
// counts (the part after the last '@', as go-smtp leaves it: source
// routes dropped, quoting removed), and only the sender domain's
// relay_from list can widen that.
func TestOpenRelayRefused(t *testing.T) {
	domains := listener.DomainMap{
		"local.test":        {RelayTo: true},
		"oob.test":          {LogOOB: listener.LogThenRelay},
		"elsewhere.test":    {RelayFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		"trusted.test":      {RelayFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		"*.local.test":      {RelayTo: true},
		"listed-only.local": {},
	}
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta, func(_ *mta.Options, c *listener.Config) {
		c.RelayHosts = []netip.Prefix{} // 127.0.0.1 is not trusted
		c.Domains = domains
	})
	refused := []struct{ from, to string }{
		{"", "v@foreign.test"},
		{"a@local.test", "v@foreign.test"},                   // sender at a relay_to domain
		{"a@oob.test", "v@foreign.test"},                     // ... at a log_oob domain
		{"a@elsewhere.test", "v@foreign.test"},               // relay_from without our address
		{"a@sub.local.test", "v@foreign.test"},               // sender at a wildcard relay_to domain
		{"@trusted.test:a@elsewhere.test", "v@foreign.test"}, // route naming a trusted domain
		{"\"a@trusted.test\"@elsewhere.test", "v@foreign.test"},
		{"a@TRUSTED.test.", "v@foreign.test"},
		{"a@elsewhere.test", "\"v@local.test\"@foreign.test"}, // quoted local part
		{"a@elsewhere.test", "v@local.test@foreign.test"},
		{"a@elsewhere.test", "v%local.test@foreign.test"}, // percent hack, both ways
		{"a@elsewhere.test", "v%foreign.test@unlisted.test"},
		{"a@elsewhere.test", "@local.test,@oob.test:v@foreign.test"}, // source route
		{"a@elsewhere.test", "@local.test:v@foreign.test"},
		{"a@elsewhere.test", "local.test!v@foreign.test"}, // bang path
		{"a@elsewhere.test", "v@FOREIGN.test"},
		{"a@elsewhere.test", "v@local.test.foreign.test"},
		{"a@elsewhere.test", "v@local.test."}, // not the listed name
		{"a@elsewhere.test", "v@[127.0.0.1]"},
		{"a@elsewhere.test", "v@foreign.test:25"},
		{"a@elsewhere.test", "v@listed-only.local"},
		{"a@elsewhere.test", "v@"},
		{"a@elsewhere.test", "v"},
	}
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	n550 := 0
	for _, tc := range refused {
		rc.expectCmd("RSET", 250)
		code, msg := rc.cmd("MAIL FROM:<" + tc.from + ">")
		if code != 250 {
			if code != 501 {
				t.Errorf("MAIL FROM:<%s>: %d %q", tc.from, code, msg)
			}
			continue
		}
		code, msg = rc.cmd("RCPT TO:<" + tc.to + ">")
		if code == 550 {
			n550++
		}
		if !(code == 550 && strings.HasPrefix(msg, "5.7.1 ") || code == 501) {
			t.Errorf("<%s> -> <%s>: got %d %q, want 550 5.7.1 or 501", tc.from, tc.to, code, msg)
		}
		if code, _ := rc.cmd("DATA"); code == 354 {
			rc.send(".\r\n")
			rc.reply()
			t.Errorf("<%s> -> <%s>: DATA accepted", tc.from, tc.to)
		}
	}

	// Controls, so that the refusals above mean something: our domains
	// are accepted, and so is any recipient for a sender whose relay_from
	// holds 127.0.0.1. Envelope tricks only ever route to the domain after
	// the last '@'.
	accepted := []struct{ from, to, queue string }{
		{"", "v@local.test", "local.test"},
		{"a@elsewhere.test", "v@mx.local.test", "mx.local.test"},
		{"a@elsewhere.test", "v@LOCAL.test", "local.test"},
		{"a@elsewhere.test", "v%foreign.test@local.test", "local.test"},
		{"a@elsewhere.test", "\"v@foreign.test\"@local.test", "local.test"},
		{"a@elsewhere.test", "v@foreign.test@local.test", "local.test"},
		{"a@elsewhere.test", "@foreign.test:v@local.test", "local.test"},
		{"a@elsewhere.test", "foreign.test!v@local.test", "local.test"},
		{"a@elsewhere.test", "v@oob.test", "oob.test"},
		{"a@trusted.test", "v@foreign.test", "foreign.test"},
	}
	for _, tc := range accepted {
		rc.expectCmd("RSET", 250)
		before := ts.srv.QueueSummary()[tc.queue]
		sendMail(t, rc, tc.from, []string{tc.to}, testMessage("relay", "x"))
		if after := ts.srv.QueueSummary()[tc.queue]; after != before+1 {
			t.Errorf("<%s> -> <%s> not queued for %s: %v", tc.from, tc.to, tc.queue, ts.srv.QueueSummary())
		}
	}
	if n := countSpool(t, data); n != len(accepted) {
		t.Errorf("%d messages stored, want %d", n, len(accepted))
	}
	for q := range ts.srv.QueueSummary() {
		if strings.Contains(q, "foreign") && q != "foreign.test" || q == "unlisted.test" {
			t.Errorf("mail queued for %q", q)
		}
	}
	if n550 < len(refused)/2 {
		t.Errorf("only %d of %d refusals were relay refusals", n550, len(refused))
	}
	n := 0
	for _, r := range ts.sink.OfType(logs.Rejection) {
		if r.Response.Code == 550 {
			n++
		}
	}
	if n != n550 {
		t.Errorf("%d Rejection records for %d relay refusals", n, n550)
	}
}
