package mta_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// reportDomains are the listener domains of the report tests. The relay
// hosts are empty, so a recipient is accepted only for its domain.
var reportDomains = listener.DomainMap{
	"bounce.sender.example": {LogOOB: listener.LogThenDrop},
	"fbl.sender.example":    {LogARF: listener.LogThenDrop},
	"relayoob.example":      {LogOOB: listener.LogThenRelay},
	"both.example":          {LogOOB: listener.LogThenRelay, LogARF: listener.LogThenDrop},
	"ignore.example":        {LogOOB: listener.Ignore, RelayTo: true},
	"relay.example":         {RelayTo: true},
}

func startReportServer(t *testing.T, opts ...serverOpt) *testServer {
	t.Helper()
	all := append([]serverOpt{func(o *mta.Options, c *listener.Config) {
		o.Classifier = bounce.DefaultClassifier()
		c.Domains = reportDomains
		c.RelayHosts = []netip.Prefix{}
	}}, opts...)
	return startServer(t, spool.NewMemory(), spool.NewMemory(), all...)
}

// sample reads a report from mta/reports/testdata with CRLF line endings.
func sample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("reports", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\n", "\r\n")
}

// sendReport sends msg in one transaction (MAIL FROM:<>, as reports are
// sent) and returns the IDs of the 250 reply.
func sendReport(t *testing.T, ts *testServer, to []string, msg string) []string {
	t.Helper()
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	return sendMail(t, rc, "", to, dotStuff(msg))
}

func dotStuff(msg string) string {
	return strings.ReplaceAll(msg, "\r\n.", "\r\n..")
}

type wantOOB struct {
	rcpt     string
	code     int
	enhanced string
	class    string
	content  string // substring
}

func enhanced(r logs.Response) string {
	if e := r.EnhancedCode; e != nil {
		return fmt.Sprintf("%d.%d.%d", e.Class, e.Subject, e.Detail)
	}
	return ""
}

func TestOOBRecords(t *testing.T) {
	tests := []struct {
		file        string
		peer        string // peer_address.name
		want        []wantOOB
		queueID     string
		messageID   string
		traceTenant string
	}{
		{
			file: "dsn-gmail.eml", peer: "googlemail.com",
			want:    []wantOOB{{"nobody@gmail.com", 550, "5.1.1", "InvalidRecipient", "The email account that you tried to reach does not exist."}},
			queueID: "18f2c9a1b3c4d5e6aabbccddeeff0011", messageID: "campaign-42.1730653960@sender.example", traceTenant: "acme",
		},
		{
			file: "dsn-outlook.eml", peer: "DM6PR11MB1234.namprd11.prod.outlook.com",
			want:    []wantOOB{{"alice@outlook.com", 550, "5.5.0", "InvalidRecipient", "mailbox unavailable"}},
			queueID: "18f2ca00000000010102030405060708", messageID: "order-991@sender.example",
		},
		{
			file: "dsn-postfix-multi.eml", peer: "mx.hosting.example",
			want: []wantOOB{
				{"Quota@hosting.example", 552, "5.2.2", "QuotaIssues", "mailbox full"},
				{"blocked@hosting.example", 554, "5.7.1", "SpamBlock", "zen.spamhaus.org"},
			},
			messageID: "batch-7@sender.example",
		},
		{
			file: "dsn-yahoo.eml", peer: "client.test",
			want:    []wantOOB{{"jdoe@yahoo.com", 554, "5.0.0", "InvalidRecipient", "Not a valid recipient"}},
			queueID: "18f2ca1111111111a1a2a3a4a5a6a7a8", messageID: "weekly-2026-45.jdoe@sender.example", traceTenant: "acme",
		},
		{
			file: "dsn-exim.eml", peer: "client.test",
			want:    []wantOOB{{"full@isp.example", 552, "5.2.2", "QuotaIssues", "Mailbox full"}},
			queueID: "18f2cb2222222222b1b2b3b4b5b6b7b8", messageID: "hello-1@sender.example",
		},
		{
			file: "dsn-exchange-text.eml", peer: "client.test",
			want:      []wantOOB{{"bob@corp.example", 550, "5.1.1", "InvalidRecipient", "RecipNotFound"}},
			messageID: "invoice-2026-311@sender.example",
		},
		{
			file: "dsn-gmail-text.eml", peer: "client.test",
			want:    []wantOOB{{"gone@workspace.example", 550, "5.2.1", "InactiveMailbox", "disabled"}},
			queueID: "18f2ce5555555555e1e2e3e4e5e6e7e8", messageID: "welcome-3@sender.example",
		},
	}
	ts := startReportServer(t)
	seen := 0
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			ids := sendReport(t, ts, []string{"bounces@bounce.sender.example"}, sample(t, tc.file))
			all := ts.sink.OfType(logs.OOB)
			recs := all[seen:]
			seen = len(all)
			if len(recs) != len(tc.want) {
				t.Fatalf("got %d OOB records, want %d: %+v", len(recs), len(tc.want), recs)
			}
			for i, w := range tc.want {
				rec := recs[i]
				if rec.ID != ids[0] {
					t.Errorf("record id %s, want the reply's %s", rec.ID, ids[0])
				}
				if rec.Sender != "bounces@bounce.sender.example" || len(rec.Recipient) != 1 || rec.Recipient[0] != w.rcpt {
					t.Errorf("sender %q recipient %v, want %q", rec.Sender, rec.Recipient, w.rcpt)
				}
				if rec.Response.Code != w.code || enhanced(rec.Response) != w.enhanced || !strings.Contains(rec.Response.Content, w.content) {
					t.Errorf("response %+v (%s), want %d %s ...%s...", rec.Response, enhanced(rec.Response), w.code, w.enhanced, w.content)
				}
				if rec.BounceClassification != w.class {
					t.Errorf("classification %q, want %q (response %q)", rec.BounceClassification, w.class, rec.Response.Content)
				}
				if rec.PeerAddress == nil || rec.PeerAddress.Name != tc.peer || rec.PeerAddress.Addr != "127.0.0.1" {
					t.Errorf("peer %+v, want %s", rec.PeerAddress, tc.peer)
				}
				if got, _ := rec.Meta[mta.MetaOriginalQueueID].(string); got != tc.queueID {
					t.Errorf("original queue id %q, want %q", got, tc.queueID)
				}
				if got, _ := rec.Meta[mta.MetaOriginalMessageID].(string); got != tc.messageID {
					t.Errorf("original message id %q, want %q", got, tc.messageID)
				}
				trace, _ := rec.Meta[mta.MetaSupplementalTrace].(map[string]any)
				if got, _ := trace["tenant"].(string); got != tc.traceTenant {
					t.Errorf("trace %v, want tenant %q", trace, tc.traceTenant)
				}
			}
		})
	}
	// LogThenDrop: nothing was stored; each bounce has its Reception
	// record, as in KumoMTA.
	if n := countSpool(t, ts.data); n != 0 {
		t.Errorf("%d messages spooled for LogThenDrop reports", n)
	}
	if n := len(ts.sink.OfType(logs.Reception)); n != len(tests) {
		t.Errorf("%d Reception records for %d dropped bounces", n, len(tests))
	}
}

func TestFeedbackRecords(t *testing.T) {
	ts := startReportServer(t)
	ids := sendReport(t, ts, []string{"fbl@fbl.sender.example"}, sample(t, "arf-abuse-yahoo.eml"))
	recs := ts.sink.OfType(logs.Feedback)
	if len(recs) != 1 {
		t.Fatalf("got %d Feedback records, want 1", len(recs))
	}
	rec := recs[0]
	if rec.ID != ids[0] || rec.Sender != "" || rec.Recipient[0] != "fbl@fbl.sender.example" || rec.Response.Code != 250 {
		t.Errorf("record %+v", rec)
	}
	var fr map[string]any
	if err := json.Unmarshal(rec.FeedbackReport, &fr); err != nil {
		t.Fatalf("feedback_report %s: %v", rec.FeedbackReport, err)
	}
	checks := map[string]any{
		"feedback_type":      "abuse",
		"user_agent":         "Yahoo!-Mail-Feedback/2.0",
		"version":            "1",
		"original_mail_from": "bounces+complainer=aol.com@bounce.sender.example",
		"source_ip":          "192.0.2.20",
		"arrival_date":       "2026-11-10T16:18:02Z",
	}
	for k, v := range checks {
		if fr[k] != v {
			t.Errorf("feedback_report.%s = %v, want %v", k, fr[k], v)
		}
	}
	if rt, _ := fr["original_rcpto_to"].([]any); len(rt) != 1 || rt[0] != "complainer@aol.com" {
		t.Errorf("original_rcpto_to %v", fr["original_rcpto_to"])
	}
	if rd, _ := fr["reported_domain"].([]any); len(rd) != 1 || rd[0] != "sender.example" {
		t.Errorf("reported_domain %v", fr["reported_domain"])
	}
	if tr, _ := fr["supplemental_trace"].(map[string]any); tr["campaign"] != "promo" || tr["recipient"] != "complainer@aol.com" {
		t.Errorf("supplemental_trace %v", fr["supplemental_trace"])
	}
	if om, _ := fr["original_message"].(string); !strings.Contains(om, "Subject: Weekly deals\n") {
		t.Errorf("original_message %q", om)
	}
	if rec.Meta[mta.MetaOriginalQueueID] != "18f2cc3333333333c1c2c3c4c5c6c7c8" || rec.Meta[mta.MetaOriginalMessageID] != "deals-2026-46.complainer@sender.example" {
		t.Errorf("correlation meta %v", rec.Meta)
	}
	// The whole record encodes in KumoMTA's shape, feedback_report included.
	b, err := json.Marshal(rec)
	if err != nil || !strings.Contains(string(b), `"type":"Feedback"`) || !strings.Contains(string(b), `"feedback_report":{"feedback_type":"abuse"`) {
		t.Errorf("encoded record %s (%v)", b, err)
	}
	if n := countSpool(t, ts.data); n != 0 {
		t.Errorf("%d messages spooled for a LogThenDrop report", n)
	}
}

// A report that cannot be parsed is accepted and logged with the reason.
func TestUnparseableReports(t *testing.T) {
	tests := []struct {
		name, file, to string
		kind           logs.RecordType
		reason         string
	}{
		{"auto-reply at a bounce domain", "not-a-bounce.eml", "bounces@bounce.sender.example", logs.OOB, "no delivery-status part and no known bounce text"},
		{"broken delivery-status", "dsn-broken-status.eml", "bounces@bounce.sender.example", logs.OOB, `invalid Action "exploded"`},
		{"report without status part", "dsn-no-status-part.eml", "bounces@bounce.sender.example", logs.OOB, "has no delivery-status part"},
		{"ARF without Feedback-Type", "arf-missing-type.eml", "fbl@fbl.sender.example", logs.Feedback, "lacks required field Feedback-Type"},
		{"ARF without report part", "arf-no-report-part.eml", "fbl@fbl.sender.example", logs.Feedback, "no message/feedback-report part"},
		{"mail at a feedback domain", "not-a-bounce.eml", "fbl@fbl.sender.example", logs.Feedback, "not an ARF feedback report"},
		{"broken ARF at a domain taking both", "arf-missing-type.eml", "x@both.example", logs.Feedback, "lacks required field"},
		{"bounce at a domain taking both", "dsn-exim.eml", "x@both.example", logs.OOB, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startReportServer(t)
			ids := sendReport(t, ts, []string{tc.to}, sample(t, tc.file))
			recs := ts.sink.OfType(tc.kind)
			if len(recs) != 1 {
				t.Fatalf("got %d %s records, want 1: %+v", len(recs), tc.kind, ts.sink.Records())
			}
			rec := recs[0]
			if rec.ID != ids[0] {
				t.Errorf("record id %s, reply id %s", rec.ID, ids[0])
			}
			if tc.reason == "" { // parsed after all
				if rec.Response.Code == 500 {
					t.Errorf("parseable report logged as unparseable: %+v", rec.Response)
				}
				return
			}
			if rec.Response.Code != 500 || !strings.Contains(rec.Response.Content, tc.reason) || rec.BounceClassification != logs.Uncategorized {
				t.Errorf("response %+v class %q, want 500 with %q", rec.Response, rec.BounceClassification, tc.reason)
			}
			if got, _ := rec.Meta[mta.MetaReportError].(string); !strings.Contains(got, tc.reason) {
				t.Errorf("meta report_error %q", got)
			}
			if rec.Recipient[0] != tc.to {
				t.Errorf("recipient %v, want the envelope's %s", rec.Recipient, tc.to)
			}
		})
	}
}

// LogThenRelay queues the report like any message; LogThenDrop does not;
// Ignore treats the domain as if it had no report handling.
func TestReportDispositions(t *testing.T) {
	tests := []struct {
		name      string
		to        []string
		file      string
		stored    int // messages spooled
		oob       int // OOB records
		reception int // Reception records
	}{
		{"LogThenRelay", []string{"b@relayoob.example"}, "dsn-gmail.eml", 1, 1, 1},
		{"LogThenDrop", []string{"bounces@bounce.sender.example"}, "dsn-gmail.eml", 0, 1, 1},
		{"Ignore", []string{"b@ignore.example"}, "dsn-gmail.eml", 1, 0, 1},
		{"mixed transaction", []string{"r@relay.example", "bounces@bounce.sender.example"}, "dsn-gmail.eml", 1, 1, 2},
		{"relay and drop in one transaction", []string{"b@relayoob.example", "bounces@bounce.sender.example"}, "dsn-postfix-multi.eml", 1, 4, 2},
		{"delay notice only", []string{"bounces@bounce.sender.example"}, "dsn-delayed.eml", 0, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startReportServer(t)
			ids := sendReport(t, ts, tc.to, sample(t, tc.file))
			if len(ids) != len(tc.to) {
				t.Errorf("got ids %v for %d recipients", ids, len(tc.to))
			}
			if n := countSpool(t, ts.data); n != tc.stored {
				t.Errorf("%d messages spooled, want %d", n, tc.stored)
			}
			oob := ts.sink.OfType(logs.OOB)
			if len(oob) != tc.oob {
				t.Errorf("%d OOB records, want %d", len(oob), tc.oob)
			}
			rcp := ts.sink.OfType(logs.Reception)
			if len(rcp) != tc.reception {
				t.Errorf("%d Reception records, want %d", len(rcp), tc.reception)
			}
			// Every record's ID is one the client was given; a relayed
			// report's OOB record has the ID of the stored message.
			given := map[string]bool{}
			for _, id := range ids {
				given[id] = true
			}
			for _, r := range append(oob, rcp...) {
				if !given[r.ID] {
					t.Errorf("%s record id %s not in reply %v", r.Type, r.ID, ids)
				}
			}
			for _, r := range rcp[:tc.stored] {
				id, err := spool.ParseID(r.ID)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ts.data.Load(context.Background(), id); err != nil {
					t.Errorf("relayed message %s not stored: %v", r.ID, err)
				}
			}
		})
	}
}

// A report about a message this server sent is correlated with it: the
// original's queue ID (from its Received field), Message-ID and the
// supplemental trace header with the meta the listener includes.
func TestReportCorrelationRoundTrip(t *testing.T) {
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, c *listener.Config) {
		o.Classifier = bounce.DefaultClassifier()
		c.Domains = reportDomains
		c.TraceHeaders.IncludeMetaNames = []string{mta.MetaTenant, mta.MetaCampaign}
		o.Policy.MessageReceived = func(_ context.Context, m *mta.Message) error {
			if m.Sender() != "" {
				m.SetMeta(mta.MetaTenant, "acme")
				m.SetMeta(mta.MetaCampaign, "autumn")
			}
			return nil
		}
	})
	// The original, from a relay host (loopback) to a remote recipient.
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	orig := sendMail(t, rc, "bounces@bounce.sender.example", []string{"nobody@remote.example"}, testMessage("roundtrip", "hello"))[0]
	id, err := spool.ParseID(orig)
	if err != nil {
		t.Fatal(err)
	}
	data, err := ts.data.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}

	dsn := "From: MAILER-DAEMON@mx.remote.example\r\n" +
		"To: bounces@bounce.sender.example\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"RT\"\r\n\r\n" +
		"--RT\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver your message.\r\n\r\n" +
		"--RT\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mx.remote.example\r\n\r\n" +
		"Final-Recipient: rfc822; nobody@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.example>: Recipient address rejected: User unknown in virtual mailbox table\r\n\r\n" +
		"--RT\r\nContent-Type: message/rfc822\r\n\r\n" + string(data) + "\r\n--RT--\r\n"
	sendReport(t, ts, []string{"bounces@bounce.sender.example"}, dsn)

	arf := "From: fbl@isp.example\r\nTo: fbl@fbl.sender.example\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"FB\"\r\n\r\n" +
		"--FB\r\nContent-Type: text/plain\r\n\r\nThis is a spam complaint.\r\n\r\n" +
		"--FB\r\nContent-Type: message/feedback-report\r\n\r\n" +
		"Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: nobody@remote.example\r\n\r\n" +
		"--FB\r\nContent-Type: message/rfc822\r\n\r\n" + string(data) + "\r\n--FB--\r\n"
	sendReport(t, ts, []string{"fbl@fbl.sender.example"}, arf)

	oob := ts.sink.OfType(logs.OOB)
	if len(oob) != 1 {
		t.Fatalf("got %d OOB records, want 1", len(oob))
	}
	rec := oob[0]
	if rec.Meta[mta.MetaOriginalQueueID] != orig || rec.Meta[mta.MetaOriginalMessageID] != "roundtrip@example.com" {
		t.Errorf("OOB correlation %v, want queue id %s", rec.Meta, orig)
	}
	trace, _ := rec.Meta[mta.MetaSupplementalTrace].(map[string]any)
	if trace["recipient"] != "nobody@remote.example" || trace["tenant"] != "acme" || trace["campaign"] != "autumn" {
		t.Errorf("OOB trace %v", trace)
	}
	if rec.BounceClassification != bounce.InvalidRecipient || rec.Recipient[0] != "nobody@remote.example" {
		t.Errorf("OOB %s for %v", rec.BounceClassification, rec.Recipient)
	}

	fb := ts.sink.OfType(logs.Feedback)
	if len(fb) != 1 {
		t.Fatalf("got %d Feedback records, want 1", len(fb))
	}
	if fb[0].Meta[mta.MetaOriginalQueueID] != orig {
		t.Errorf("Feedback correlation %v, want queue id %s", fb[0].Meta, orig)
	}
	var fr struct {
		Trace map[string]any `json:"supplemental_trace"`
	}
	if err := json.Unmarshal(fb[0].FeedbackReport, &fr); err != nil || fr.Trace["tenant"] != "acme" || fr.Trace["campaign"] != "autumn" {
		t.Errorf("feedback_report.supplemental_trace %v (%v)", fr.Trace, err)
	}
}
