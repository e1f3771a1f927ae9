package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// parsedDSN is a report taken apart with go-message.
type parsedDSN struct {
	header mail.Header
	parts  []dsnPart
}

type dsnPart struct {
	mediaType string
	params    map[string]string
	header    message.Header
	body      []byte
}

// parseDSN parses msg with go-message and checks the properties every
// report must have: CRLF line ends only, lines of at most 998 octets,
// and a multipart/report; report-type=delivery-status structure.
func parseDSN(t *testing.T, msg []byte) parsedDSN {
	t.Helper()
	checkLines(t, msg)
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("go-message: %v\n%s", err, msg)
	}
	mt, params, err := e.Header.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q %v %v", mt, params, err)
	}
	out := parsedDSN{header: mail.Header{Header: e.Header}}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatal("not multipart")
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("NextPart: %v", err)
		}
		body, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("part body: %v", err)
		}
		pmt, pparams, _ := p.Header.ContentType()
		out.parts = append(out.parts, dsnPart{pmt, pparams, p.Header, body})
	}
	return out
}

// checkLines asserts that every line of msg ends in CRLF (no bare CR or
// LF anywhere) and is at most 998 octets long.
func checkLines(t *testing.T, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Error("message does not end with CRLF")
	}
	for i, line := range bytes.Split(msg, []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 998 {
			t.Errorf("line %d is %d octets long", i+1, len(line))
		}
	}
}

// statusGroups parses a delivery-status body into its field groups
// (per-message first, then one per recipient), unfolding fields.
func statusGroups(t *testing.T, body []byte) []textproto.MIMEHeader {
	t.Helper()
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	var groups []textproto.MIMEHeader
	for {
		h, err := r.ReadMIMEHeader()
		if len(h) > 0 {
			groups = append(groups, h)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("delivery-status: %v\n%s", err, body)
		}
	}
	return groups
}

var (
	arrival = time.Date(2026, 3, 4, 10, 11, 12, 0, time.FixedZone("", 3600))
	dsnDate = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
)

const origHeaders = "Received: from client.example.com (client.example.com [192.0.2.7])\n" +
	"\tby mx.example.net with ESMTPS id 0123456789abcdef\n" +
	"From: Alice <alice@example.com>\n" +
	"To: bob@example.org, carol@example.org\n" +
	"Subject: Quarterly report\n" +
	"Message-ID: <report-42@example.com>\n" +
	"\n" +
	"This body must not be included in the report.\n"

func TestBuildDSNFailed(t *testing.T) {
	longDiag := "smtp; 550 5.1.1 " + strings.Repeat("The email account that you tried to reach does not exist. ", 30)
	longDiag = strings.TrimSpace(longDiag)
	msg, err := BuildDSN(DSNOptions{
		ReportingMTA: "mx.example.net",
		OriginalID:   "1d98076abbbc11ed940250ebf67f93bd",
		EnvelopeID:   "env-42",
		Sender:       "alice@example.com",
		Recipients: []RecipientStatus{
			{
				Address: "bob@example.org", Action: "failed", Status: "5.1.1",
				DiagnosticCode: longDiag, RemoteMTA: "mx1.example.org",
				OriginalRecipient: "<Bob@Example.org>", LastAttemptDate: dsnDate.Add(-time.Minute),
			},
			{
				Address: "<carol@example.org>", Action: "failed", Status: "5.2.2",
				DiagnosticCode: "552 5.2.2 mailbox full", RemoteMTA: "dns; mx2.example.org",
			},
		},
		ArrivalDate:     arrival,
		ReceivedFromMTA: "client.example.com",
		OriginalHeaders: []byte(origHeaders),
		Reason:          "The remote servers refused the message.",
		Date:            dsnDate,
		MessageID:       "<dsn-1@mx.example.net>",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, msg)

	// Top-level header.
	from, err := d.header.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "MAILER-DAEMON@mx.example.net" || from[0].Name != "Mail Delivery System" {
		t.Errorf("From: %v %v", from, err)
	}
	to, err := d.header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "alice@example.com" {
		t.Errorf("To: %v %v", to, err)
	}
	if s, _ := d.header.Subject(); s != "Undelivered Mail Returned to Sender" {
		t.Errorf("Subject %q", s)
	}
	if date, err := d.header.Date(); err != nil || !date.Equal(dsnDate) {
		t.Errorf("Date %v %v", date, err)
	}
	if id, err := d.header.MessageID(); err != nil || id != "dsn-1@mx.example.net" {
		t.Errorf("Message-ID %q %v", id, err)
	}
	if v := d.header.Get("Auto-Submitted"); v != "auto-replied" {
		t.Errorf("Auto-Submitted %q", v)
	}
	if v := d.header.Get("MIME-Version"); v != "1.0" {
		t.Errorf("MIME-Version %q", v)
	}
	if v := d.header.Get("Content-Transfer-Encoding"); v != "" {
		t.Errorf("an ASCII report has Content-Transfer-Encoding %q", v)
	}

	if len(d.parts) != 3 {
		t.Fatalf("%d parts", len(d.parts))
	}
	// Part 1: human-readable.
	if p := d.parts[0]; p.mediaType != "text/plain" || p.params["charset"] != "us-ascii" {
		t.Errorf("part 1: %s %v", p.mediaType, p.params)
	}
	text := string(d.parts[0].body)
	for _, want := range []string{"mx.example.net", "could not be delivered", "<bob@example.org>", "mx1.example.org",
		"The remote servers refused the message.", "1d98076abbbc11ed940250ebf67f93bd", "552 5.2.2 mailbox full"} {
		if !strings.Contains(strings.ReplaceAll(text, "\r\n", " "), want) {
			t.Errorf("text part lacks %q:\n%s", want, text)
		}
	}
	// Part 2: machine-readable.
	if p := d.parts[1]; p.mediaType != "message/delivery-status" {
		t.Errorf("part 2: %s", p.mediaType)
	}
	groups := statusGroups(t, d.parts[1].body)
	if len(groups) != 3 {
		t.Fatalf("%d delivery-status groups:\n%s", len(groups), d.parts[1].body)
	}
	perMsg := groups[0]
	for k, want := range map[string]string{
		"Reporting-Mta":        "dns; mx.example.net",
		"Original-Envelope-Id": "env-42",
		"X-Mtakit-Queue-Id":    "1d98076abbbc11ed940250ebf67f93bd",
		"Received-From-Mta":    "dns; client.example.com",
		"Arrival-Date":         "Wed, 04 Mar 2026 10:11:12 +0100",
	} {
		if got := perMsg.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	bob, carol := groups[1], groups[2]
	for k, want := range map[string]string{
		"Original-Recipient": "rfc822; Bob@Example.org",
		"Final-Recipient":    "rfc822; bob@example.org",
		"Action":             "failed",
		"Status":             "5.1.1",
		"Remote-Mta":         "dns; mx1.example.org",
		"Diagnostic-Code":    longDiag,
		"Last-Attempt-Date":  "Wed, 04 Mar 2026 11:59:00 +0000",
	} {
		if got := bob.Get(k); got != want {
			t.Errorf("bob %s = %q, want %q", k, got, want)
		}
	}
	for k, want := range map[string]string{
		"Final-Recipient": "rfc822; carol@example.org",
		"Status":          "5.2.2",
		"Remote-Mta":      "dns; mx2.example.org",
		"Diagnostic-Code": "smtp; 552 5.2.2 mailbox full",
	} {
		if got := carol.Get(k); got != want {
			t.Errorf("carol %s = %q, want %q", k, got, want)
		}
	}
	if _, ok := carol["Will-Retry-Until"]; ok {
		t.Error("failed recipient has Will-Retry-Until")
	}
	// The long Diagnostic-Code was folded into short lines.
	for _, l := range strings.Split(string(d.parts[1].body), "\r\n") {
		if len(l) > 78 {
			t.Errorf("delivery-status line of %d octets: %q", len(l), l)
		}
	}
	// Part 3: the original headers, without the body, in CRLF.
	if p := d.parts[2]; p.mediaType != "text/rfc822-headers" {
		t.Errorf("part 3: %s", p.mediaType)
	}
	hdrs := string(d.parts[2].body)
	wantHdrs := strings.ReplaceAll(origHeaders[:strings.Index(origHeaders, "\n\n")+1], "\n", "\r\n")
	if hdrs != wantHdrs {
		t.Errorf("headers part:\n%q\nwant\n%q", hdrs, wantHdrs)
	}
}

func TestBuildDSNDelayed(t *testing.T) {
	until := arrival.Add(7 * 24 * time.Hour)
	msg, err := BuildDSN(DSNOptions{
		ReportingMTA: "mx.example.net",
		Sender:       "<alice@example.com>",
		Recipients: []RecipientStatus{{
			Address: "bob@example.org", Action: "Delayed", Status: "4.4.1",
			DiagnosticCode: "X-Mtakit; connection timed out", WillRetryUntil: until,
		}},
		OriginalHeaders: []byte("Subject: hi\r\n\r\nbody"),
	})
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, msg)
	if s, _ := d.header.Subject(); s != "Delayed Mail (still being retried)" {
		t.Errorf("Subject %q", s)
	}
	if date, err := d.header.Date(); err != nil || time.Since(date) > time.Minute {
		t.Errorf("default Date %v %v", date, err)
	}
	if id, err := d.header.MessageID(); err != nil || !strings.HasSuffix(id, "@mx.example.net") {
		t.Errorf("generated Message-ID %q %v", id, err)
	}
	if !strings.Contains(string(d.parts[0].body), "keep trying") {
		t.Errorf("text part:\n%s", d.parts[0].body)
	}
	groups := statusGroups(t, d.parts[1].body)
	r := groups[1]
	if r.Get("Action") != "delayed" || r.Get("Status") != "4.4.1" ||
		r.Get("Will-Retry-Until") != until.Format(dateLayout) ||
		r.Get("Diagnostic-Code") != "X-Mtakit; connection timed out" {
		t.Errorf("recipient group %v", r)
	}
	if _, ok := groups[0]["Arrival-Date"]; ok {
		t.Error("Arrival-Date without ArrivalDate")
	}
	if string(d.parts[2].body) != "Subject: hi\r\n" {
		t.Errorf("headers %q", d.parts[2].body)
	}
	if got := d.parts[2].header.Get("Content-Description"); got != "Delayed Message Headers" {
		t.Errorf("headers description %q", got)
	}
}

func TestBuildDSNNoHeaders(t *testing.T) {
	msg, err := BuildDSN(DSNOptions{
		ReportingMTA: "mx.example.net",
		Sender:       "alice@example.com",
		Recipients:   []RecipientStatus{{Address: "bob@example.org", Action: "delivered", Status: "2.0.0"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, msg)
	if len(d.parts) != 2 {
		t.Errorf("%d parts", len(d.parts))
	}
	if s, _ := d.header.Subject(); s != "Successful Mail Delivery Report" {
		t.Errorf("Subject %q", s)
	}

	// KumoMTA's generate_rfc3464_message wording, through the overrides.
	msg, err = BuildDSN(DSNOptions{
		ReportingMTA: "mta1.example.com",
		Sender:       "sender@sender.example.com",
		Recipients:   []RecipientStatus{{Address: "recip@target.example.com", Action: "failed", Status: "5.7.1", DiagnosticCode: "smtp; 550 5.7.1 no thanks"}},
		From:         "Mail Delivery Subsystem <mailer-daemon@mta1.example.com>",
		Subject:      "Returned mail",
	})
	if err != nil {
		t.Fatal(err)
	}
	d = parseDSN(t, msg)
	if s, _ := d.header.Subject(); s != "Returned mail" {
		t.Errorf("Subject %q", s)
	}
	if f, err := d.header.AddressList("From"); err != nil || f[0].Address != "mailer-daemon@mta1.example.com" || f[0].Name != "Mail Delivery Subsystem" {
		t.Errorf("From %v %v", f, err)
	}
}

func TestBuildDSNNullSender(t *testing.T) {
	for _, s := range []string{"", "<>", "  ", " <> "} {
		if ShouldSendDSN(s) {
			t.Errorf("ShouldSendDSN(%q) = true", s)
		}
		_, err := BuildDSN(DSNOptions{
			ReportingMTA: "mx.example.net", Sender: s,
			Recipients: []RecipientStatus{{Address: "bob@example.org", Action: "failed", Status: "5.1.1"}},
		})
		if !errors.Is(err, ErrNullSender) {
			t.Errorf("sender %q: %v", s, err)
		}
	}
	for _, s := range []string{"alice@example.com", "<alice@example.com>", "MAILER-DAEMON@example.com"} {
		if !ShouldSendDSN(s) {
			t.Errorf("ShouldSendDSN(%q) = false", s)
		}
	}
}

func TestBuildDSNInvalid(t *testing.T) {
	ok := RecipientStatus{Address: "bob@example.org", Action: "failed", Status: "5.1.1"}
	for name, opts := range map[string]DSNOptions{
		"no reporting MTA": {Sender: "a@b", Recipients: []RecipientStatus{ok}},
		"no recipients":    {ReportingMTA: "h", Sender: "a@b"},
		"no address":       {ReportingMTA: "h", Sender: "a@b", Recipients: []RecipientStatus{{Action: "failed", Status: "5.1.1"}}},
		"bad action":       {ReportingMTA: "h", Sender: "a@b", Recipients: []RecipientStatus{{Address: "x@y", Action: "bounced", Status: "5.1.1"}}},
		"bad status":       {ReportingMTA: "h", Sender: "a@b", Recipients: []RecipientStatus{{Address: "x@y", Action: "failed", Status: "550"}}},
		"status class 3":   {ReportingMTA: "h", Sender: "a@b", Recipients: []RecipientStatus{{Address: "x@y", Action: "failed", Status: "3.0.0"}}},
	} {
		if _, err := BuildDSN(opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestBuildDSNInjection: values with line breaks cannot add header fields
// or delivery-status fields.
func TestBuildDSNInjection(t *testing.T) {
	msg, err := BuildDSN(DSNOptions{
		ReportingMTA: "mx.example.net\r\nBcc: victim@example.com",
		Sender:       "alice@example.com\r\nBcc: victim@example.com",
		Recipients: []RecipientStatus{{
			Address: "bob@example.org\nAction: delivered", Action: "failed", Status: "5.1.1",
			DiagnosticCode: "smtp; 550 x\r\n\r\nFinal-Recipient: rfc822; evil@example.com",
		}},
		Subject: "Hello\r\nBcc: victim@example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, msg)
	if d.header.Has("Bcc") {
		t.Error("Bcc injected")
	}
	groups := statusGroups(t, d.parts[1].body)
	if len(groups) != 2 || len(groups[1]["Final-Recipient"]) != 1 || len(groups[1]["Action"]) != 1 {
		t.Errorf("delivery-status injected: %v", groups)
	}
}

// TestBuildDSNInternational: non-ASCII addresses and headers use the RFC
// 6533 types.
func TestBuildDSNInternational(t *testing.T) {
	msg, err := BuildDSN(DSNOptions{
		ReportingMTA:    "mx.example.net",
		Sender:          "alice@example.com",
		Recipients:      []RecipientStatus{{Address: "jösé@exämple.org", Action: "failed", Status: "5.1.1", DiagnosticCode: "smtp; 550 5.1.1 utilisateur inconnu: jösé"}},
		OriginalHeaders: []byte("Subject: Grüße\r\nFrom: alice@example.com\r\n"),
		Subject:         "Non remis: Grüße",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, msg)
	if v := d.header.Get("Content-Transfer-Encoding"); v != "8bit" {
		t.Errorf("Content-Transfer-Encoding %q", v)
	}
	if s, err := d.header.Subject(); err != nil || s != "Non remis: Grüße" {
		t.Errorf("Subject %q %v", s, err)
	}
	if d.parts[0].mediaType != "text/plain" || d.parts[0].header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Errorf("text part %s %s", d.parts[0].mediaType, d.parts[0].header.Get("Content-Transfer-Encoding"))
	}
	if !strings.Contains(string(d.parts[0].body), "jösé@exämple.org") {
		t.Errorf("text part:\n%s", d.parts[0].body)
	}
	if d.parts[1].mediaType != "message/global-delivery-status" {
		t.Errorf("status part %s", d.parts[1].mediaType)
	}
	groups := statusGroups(t, d.parts[1].body)
	if got := groups[1].Get("Final-Recipient"); got != "utf-8; jösé@exämple.org" {
		t.Errorf("Final-Recipient %q", got)
	}
	if d.parts[2].mediaType != "message/global-headers" {
		t.Errorf("headers part %s", d.parts[2].mediaType)
	}
}

// TestBuildDSNLongLines: an original header line and a diagnostic longer
// than 998 octets without a space are split.
func TestBuildDSNLongLines(t *testing.T) {
	long := strings.Repeat("x", 2500)
	msg, err := BuildDSN(DSNOptions{
		ReportingMTA:    "mx.example.net",
		Sender:          "alice@example.com",
		Recipients:      []RecipientStatus{{Address: "bob@example.org", Action: "failed", Status: "5.0.0", DiagnosticCode: "smtp; 550 " + long}},
		OriginalHeaders: []byte("X-Long: " + long + "\r\nX-Words: " + strings.Repeat("word ", 400) + "\r\nSubject: s\r\n"),
		Reason:          long,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, msg) // checks line lengths
	groups := statusGroups(t, d.parts[1].body)
	diag := strings.ReplaceAll(groups[1].Get("Diagnostic-Code"), " ", "")
	if diag != "smtp;550"+long {
		t.Errorf("diagnostic lost content: %d octets", len(diag))
	}
	h := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(d.parts[2].body, '\r', '\n'))))
	mh, err := h.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ReplaceAll(mh.Get("X-Long"), " ", "") != long || mh.Get("Subject") != "s" {
		t.Errorf("headers part lost content")
	}
	if got := mh.Get("X-Words"); got != strings.TrimSpace(strings.Repeat("word ", 400)) {
		t.Errorf("X-Words changed: %q", got)
	}
}

func TestFoldField(t *testing.T) {
	for _, line := range []string{
		"Diagnostic-Code: smtp; 550 5.1.1 " + strings.Repeat("lorem ipsum ", 40),
		"Short: value",
		"Name: " + strings.Repeat("y", 100) + " tail",
		"Name: " + strings.Repeat("z", 1200),
	} {
		parts := foldField(line, 78)
		for i, p := range parts {
			if len(p) > 997 {
				t.Errorf("piece %d of %d octets", i, len(p))
			}
			if i > 0 && p[0] != ' ' && len(line) < 997 {
				t.Errorf("piece %d does not start with a space: %q", i, p)
			}
		}
		if strings.Join(parts, "") != line {
			t.Errorf("folding changed the text")
		}
	}
}
