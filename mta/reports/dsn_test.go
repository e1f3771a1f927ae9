package reports_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta/reports"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// crlf converts a sample's LF line endings to CRLF, as it travels over SMTP.
func crlf(b []byte) []byte {
	return []byte(strings.ReplaceAll(string(b), "\n", "\r\n"))
}

type wantRcpt struct {
	rcpt     string
	action   reports.Action
	status   string
	code     int
	enhanced string
	text     string // a substring of the reply text
}

func TestParseDSN(t *testing.T) {
	tests := []struct {
		file         string
		format       reports.Format
		reportingMTA string
		rcpts        []wantRcpt
		corr         reports.Correlation
	}{
		{
			file: "dsn-gmail.eml", format: reports.FormatRFC3464, reportingMTA: "googlemail.com",
			rcpts: []wantRcpt{{"nobody@gmail.com", reports.Failed, "5.1.1", 550, "5.1.1", "The email account that you tried to reach does not exist. Please try double-checking"}},
			corr: reports.Correlation{
				MessageID: "campaign-42.1730653960@sender.example",
				QueueID:   "18f2c9a1b3c4d5e6aabbccddeeff0011",
				Trace:     map[string]any{"recipient": "nobody@gmail.com", "tenant": "acme", "campaign": "spring"},
			},
		},
		{
			file: "dsn-outlook.eml", format: reports.FormatRFC3464, reportingMTA: "DM6PR11MB1234.namprd11.prod.outlook.com",
			rcpts: []wantRcpt{{"alice@outlook.com", reports.Failed, "5.5.0", 550, "5.5.0", "Requested action not taken: mailbox unavailable"}},
			corr: reports.Correlation{
				MessageID: "order-991@sender.example",
				QueueID:   "18f2ca00000000010102030405060708",
				Trace:     map[string]any{"recipient": "alice@outlook.com"},
			},
		},
		{
			file: "dsn-postfix-multi.eml", format: reports.FormatRFC3464, reportingMTA: "mx.hosting.example",
			rcpts: []wantRcpt{
				{"Quota@hosting.example", reports.Failed, "5.2.2", 552, "5.2.2", "mailbox full"},
				{"slow@hosting.example", reports.Delayed, "4.4.1", 450, "4.4.1", "Connection timed out"},
				{"blocked@hosting.example", reports.Failed, "5.7.1", 554, "5.7.1", "blocked using zen.spamhaus.org"},
			},
			corr: reports.Correlation{MessageID: "batch-7@sender.example"},
		},
		{
			file: "dsn-yahoo.eml", format: reports.FormatQmail,
			rcpts: []wantRcpt{{"jdoe@yahoo.com", reports.Failed, "5.0.0", 554, "5.0.0", "delivery error: dd Not a valid recipient"}},
			corr: reports.Correlation{
				MessageID: "weekly-2026-45.jdoe@sender.example",
				QueueID:   "18f2ca1111111111a1a2a3a4a5a6a7a8",
				Trace:     map[string]any{"recipient": "jdoe@yahoo.com", "tenant": "acme"},
			},
		},
		{
			file: "dsn-exim.eml", format: reports.FormatExim,
			rcpts: []wantRcpt{{"full@isp.example", reports.Failed, "5.2.2", 552, "5.2.2", "Mailbox full"}},
			corr:  reports.Correlation{MessageID: "hello-1@sender.example", QueueID: "18f2cb2222222222b1b2b3b4b5b6b7b8"},
		},
		{
			file: "dsn-exchange-text.eml", format: reports.FormatExchangeText,
			rcpts: []wantRcpt{{"bob@corp.example", reports.Failed, "5.1.1", 550, "5.1.1", "RESOLVER.ADR.RecipNotFound"}},
			corr:  reports.Correlation{MessageID: "invoice-2026-311@sender.example"},
		},
		{
			file: "dsn-gmail-text.eml", format: reports.FormatGmailText,
			rcpts: []wantRcpt{{"gone@workspace.example", reports.Failed, "5.2.1", 550, "5.2.1", "account that you tried to reach is disabled"}},
			corr:  reports.Correlation{MessageID: "welcome-3@sender.example", QueueID: "18f2ce5555555555e1e2e3e4e5e6e7e8"},
		},
	}
	for _, tc := range tests {
		for _, variant := range []struct {
			name string
			conv func([]byte) []byte
		}{{"LF", func(b []byte) []byte { return b }}, {"CRLF", crlf}} {
			t.Run(tc.file+"/"+variant.name, func(t *testing.T) {
				d, err := reports.ParseDSN(variant.conv(readSample(t, tc.file)))
				if err != nil {
					t.Fatal(err)
				}
				if d.Format != tc.format {
					t.Errorf("format %q, want %q", d.Format, tc.format)
				}
				if d.ReportingMTA.Name != tc.reportingMTA {
					t.Errorf("reporting MTA %q, want %q", d.ReportingMTA.Name, tc.reportingMTA)
				}
				if len(d.Recipients) != len(tc.rcpts) {
					t.Fatalf("got %d recipients %+v, want %d", len(d.Recipients), d.Recipients, len(tc.rcpts))
				}
				for i, w := range tc.rcpts {
					r := d.Recipients[i]
					rep := r.Reply()
					if r.Recipient() != w.rcpt || r.Action != w.action || r.Status.String() != w.status ||
						rep.Code != w.code || rep.Enhanced != w.enhanced || !strings.Contains(rep.Text, w.text) {
						t.Errorf("recipient %d: %s %s %s reply %+v\nwant %+v", i, r.Recipient(), r.Action, r.Status, rep, w)
					}
					if strings.Contains(rep.Text, "550-") || strings.HasPrefix(rep.Text, w.enhanced+" ") {
						t.Errorf("recipient %d: reply text keeps continuation prefixes: %q", i, rep.Text)
					}
				}
				got := d.Original.Correlation()
				if got.MessageID != tc.corr.MessageID || got.QueueID != tc.corr.QueueID || !sameTrace(got.Trace, tc.corr.Trace) {
					t.Errorf("correlation %+v, want %+v", got, tc.corr)
				}
			})
		}
	}
}

func sameTrace(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestParseDSNFields(t *testing.T) {
	d, err := reports.ParseDSN(readSample(t, "dsn-postfix-multi.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 8, 13, 59, 58, 0, time.UTC); !d.ArrivalDate.Equal(want) {
		t.Errorf("arrival date %v, want %v", d.ArrivalDate, want)
	}
	if got := d.PerMessage.Get("X-Postfix-Queue-ID"); got != "4C2B31A0F2" {
		t.Errorf("per-message extension %q", got)
	}
	r := d.Recipients[0]
	if r.FinalRecipient != "quota@hosting.example" || r.OriginalRecipient != "Quota@hosting.example" {
		t.Errorf("final %q original %q", r.FinalRecipient, r.OriginalRecipient)
	}
	if r.RemoteMTA != (reports.MTA{Type: "dns", Name: "store.hosting.example"}) {
		t.Errorf("remote MTA %+v", r.RemoteMTA)
	}
	if r.Diagnostic.Type != "smtp" {
		t.Errorf("diagnostic type %q", r.Diagnostic.Type)
	}
	if want := time.Date(2026, 11, 15, 13, 59, 58, 0, time.UTC); !d.Recipients[1].WillRetryUntil.Equal(want) {
		t.Errorf("will retry until %v", d.Recipients[1].WillRetryUntil)
	}
	if n := len(d.Failed()); n != 2 {
		t.Errorf("%d failed recipients, want 2", n)
	}
	if !d.Original.HeadersOnly {
		t.Error("text/rfc822-headers original not marked HeadersOnly")
	}
	if d.Subject != "Undelivered Mail Returned to Sender" {
		t.Errorf("subject %q", d.Subject)
	}

	g, err := reports.ParseDSN(readSample(t, "dsn-gmail.eml"))
	if err != nil {
		t.Fatal(err)
	}
	gr := g.Recipients[0]
	if !strings.HasPrefix(gr.RemoteMTA.Name, "gmail-smtp-in.l.google.com.") {
		t.Errorf("folded Remote-MTA %q", gr.RemoteMTA.Name)
	}
	if want := time.Date(2026, 11, 3, 17, 12, 41, 0, time.UTC); !gr.LastAttemptDate.Equal(want) {
		t.Errorf("last attempt %v", gr.LastAttemptDate)
	}
	if g.Original.HeadersOnly || !strings.Contains(string(g.Original.Raw), "Everything is 20% off") {
		t.Error("message/rfc822 original not kept whole")
	}
}

// A delay notice parses, with no failed recipient.
func TestParseDSNDelayed(t *testing.T) {
	d, err := reports.ParseDSN(readSample(t, "dsn-delayed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Recipients) != 1 || d.Recipients[0].Action != reports.Delayed || len(d.Failed()) != 0 {
		t.Errorf("recipients %+v", d.Recipients)
	}
	if rep := d.Recipients[0].Reply(); rep.Code != 450 || rep.Enhanced != "4.4.1" || rep.Text == "" {
		t.Errorf("reply %+v", rep)
	}
}

func TestParseDSNErrors(t *testing.T) {
	tests := []struct {
		file   string
		notDSN bool   // the error wraps ErrNotDSN
		reason string // a substring of the error
	}{
		{"not-a-bounce.eml", true, "no delivery-status part and no known bounce text"},
		{"dsn-broken-status.eml", false, `invalid Action "exploded"`},
		{"dsn-no-status-part.eml", false, "has no delivery-status part"},
		{"arf-abuse-yahoo.eml", true, "feedback report"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			d, err := reports.ParseDSN(readSample(t, tc.file))
			if err == nil {
				t.Fatalf("parsed %+v, want an error", d)
			}
			if errors.Is(err, reports.ErrNotDSN) != tc.notDSN {
				t.Errorf("errors.Is(ErrNotDSN) = %v for %v", !tc.notDSN, err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q lacks %q", err, tc.reason)
			}
		})
	}
	if _, err := reports.ParseDSN([]byte(" bad\r\n")); err == nil {
		t.Error("malformed header accepted")
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"5.1.1", "5.1.1", true},
		{"5.1.10 (Recipient not found)", "5.1.10", true},
		{"4.4.7", "4.4.7", true},
		{"2.0.0", "2.0.0", true},
		{"3.0.0", "", false},
		{"5.1", "", false},
		{"5.1.1000", "", false},
		{"five.one.one", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		got, err := reports.ParseStatus(tc.in)
		if (err == nil) != tc.ok || got.String() != tc.want {
			t.Errorf("ParseStatus(%q) = %v, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestReply(t *testing.T) {
	tests := []struct {
		diag     string
		status   reports.Status
		want     reports.Reply
		descript string
	}{
		{"550 5.1.1 user unknown", reports.Status{5, 1, 1}, reports.Reply{550, "5.1.1", "user unknown"}, "plain"},
		{"550-5.1.1 first 550-5.1.1 second 550 5.1.1 third", reports.Status{5, 1, 1}, reports.Reply{550, "5.1.1", "first second third"}, "unfolded multi-line"},
		{"#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##", reports.Status{5, 1, 1}, reports.Reply{550, "5.1.1", "RESOLVER.ADR.RecipNotFound; not found ##"}, "exchange hash"},
		{"554: delivery error: dd", reports.Status{5, 0, 0}, reports.Reply{554, "5.0.0", "delivery error: dd"}, "qmail colon"},
		{"mailbox is full", reports.Status{5, 2, 2}, reports.Reply{550, "5.2.2", "mailbox is full"}, "no code"},
		{"", reports.Status{4, 4, 1}, reports.Reply{450, "4.4.1", ""}, "transient without diagnostic"},
		{"550 4.1.1 mismatched class", reports.Status{5, 1, 1}, reports.Reply{550, "5.1.1", "4.1.1 mismatched class"}, "class mismatch"},
	}
	for _, tc := range tests {
		r := reports.RecipientReport{Status: tc.status, Action: reports.Failed, Diagnostic: reports.Diagnostic{Type: "smtp", Text: tc.diag}}
		if tc.status.Class == 4 {
			r.Action = reports.Delayed
		}
		if got := r.Reply(); got != tc.want {
			t.Errorf("%s: Reply() = %+v, want %+v", tc.descript, got, tc.want)
		}
	}
}
