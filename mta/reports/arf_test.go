package reports_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta/reports"
)

func TestParseARF(t *testing.T) {
	t.Run("yahoo abuse", func(t *testing.T) {
		r, err := reports.ParseARF(crlf(readSample(t, "arf-abuse-yahoo.eml")))
		if err != nil {
			t.Fatal(err)
		}
		if r.FeedbackType != "abuse" || r.UserAgent != "Yahoo!-Mail-Feedback/2.0" || r.Version != "1" {
			t.Errorf("type %q agent %q version %q", r.FeedbackType, r.UserAgent, r.Version)
		}
		if r.OriginalMailFrom == nil || *r.OriginalMailFrom != "bounces+complainer=aol.com@bounce.sender.example" {
			t.Errorf("original mail from %v", r.OriginalMailFrom)
		}
		if len(r.OriginalRcptTo) != 1 || r.OriginalRcptTo[0] != "complainer@aol.com" {
			t.Errorf("original rcpt to %v", r.OriginalRcptTo)
		}
		// Received-Date is the older name of Arrival-Date.
		if want := time.Date(2026, 11, 10, 16, 18, 2, 0, time.UTC); r.ArrivalDate == nil || !r.ArrivalDate.Equal(want) {
			t.Errorf("arrival date %v", r.ArrivalDate)
		}
		if r.SourceIP == nil || *r.SourceIP != "192.0.2.20" {
			t.Errorf("source ip %v", r.SourceIP)
		}
		if len(r.ReportedDomain) != 1 || r.ReportedDomain[0] != "sender.example" {
			t.Errorf("reported domain %v", r.ReportedDomain)
		}
		if len(r.AuthenticationResults) != 1 || !strings.Contains(r.AuthenticationResults[0], "dkim=pass") {
			t.Errorf("authentication results %v", r.AuthenticationResults)
		}
		if got := r.Extensions["x-yahoo-newman-property"]; len(got) != 1 || got[0] != "ymail-3" {
			t.Errorf("extensions %v", r.Extensions)
		}
		if r.OriginalMessage == nil || strings.Contains(*r.OriginalMessage, "\r") || !strings.Contains(*r.OriginalMessage, "\nDeals!\n") {
			t.Errorf("original message %v", r.OriginalMessage)
		}
		want := map[string]any{"recipient": "complainer@aol.com", "tenant": "acme", "campaign": "promo"}
		if !sameTrace(r.SupplementalTrace, want) {
			t.Errorf("supplemental trace %v, want %v", r.SupplementalTrace, want)
		}
		c := r.Correlation()
		if c.QueueID != "18f2cc3333333333c1c2c3c4c5c6c7c8" || c.MessageID != "deals-2026-46.complainer@sender.example" {
			t.Errorf("correlation %+v", c)
		}
	})
	t.Run("fraud with headers only", func(t *testing.T) {
		r, err := reports.ParseARF(readSample(t, "arf-fraud.eml"))
		if err != nil {
			t.Fatal(err)
		}
		if r.FeedbackType != "fraud" || r.Incidents == nil || *r.Incidents != 3 {
			t.Errorf("type %q incidents %v", r.FeedbackType, r.Incidents)
		}
		if r.OriginalEnvelopeID == nil || *r.OriginalEnvelopeID != "envid-5521" {
			t.Errorf("envelope id %v", r.OriginalEnvelopeID)
		}
		if r.ReportingMTA == nil || *r.ReportingMTA != (reports.MTA{Type: "dns", Name: "fbl.isp.example"}) {
			t.Errorf("reporting mta %v", r.ReportingMTA)
		}
		if strings.Join(r.OriginalRcptTo, ",") != "victim@example.net,victim2@example.net" {
			t.Errorf("rcpt to %v", r.OriginalRcptTo)
		}
		if strings.Join(r.ReportedDomain, ",") != "sender.example,login-sender.example" || len(r.ReportedURI) != 1 {
			t.Errorf("reported %v %v", r.ReportedDomain, r.ReportedURI)
		}
		if r.SourceIP == nil || *r.SourceIP != "2001:db8::25" {
			t.Errorf("source ip %v", r.SourceIP)
		}
		if !r.Original.HeadersOnly {
			t.Error("text/rfc822-headers not marked HeadersOnly")
		}
		if c := r.Correlation(); c.QueueID != "18f2cd4444444444d1d2d3d4d5d6d7d8" || c.MessageID != "verify-77@sender.example" {
			t.Errorf("correlation %+v", c)
		}
	})
}

// The JSON form has exactly the keys of KumoMTA's ARFReport.
func TestFeedbackReportJSON(t *testing.T) {
	r, err := reports.ParseARF(readSample(t, "arf-fraud.eml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	keys := []string{
		"feedback_type", "user_agent", "version", "arrival_date", "incidents",
		"original_envelope_id", "original_mail_from", "reporting_mta", "source_ip",
		"authentication_results", "original_rcpto_to", "reported_domain", "reported_uri",
		"extensions", "original_message", "supplemental_trace",
	}
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			t.Errorf("key %q missing from %s", k, b)
		}
	}
	if len(obj) != len(keys) {
		t.Errorf("got %d keys, want %d: %s", len(obj), len(keys), b)
	}
	if obj["arrival_date"] != "2026-11-11T12:40:00Z" {
		t.Errorf("arrival_date %v", obj["arrival_date"])
	}
	if mta, _ := obj["reporting_mta"].(map[string]any); mta["mta_type"] != "dns" || mta["name"] != "fbl.isp.example" {
		t.Errorf("reporting_mta %v", obj["reporting_mta"])
	}
	var back reports.FeedbackReport
	if err := json.Unmarshal(b, &back); err != nil || back.FeedbackType != "fraud" || *back.Incidents != 3 {
		t.Errorf("round trip: %v %+v", err, back)
	}
}

func TestParseARFErrors(t *testing.T) {
	tests := []struct {
		file   string
		notARF bool
		reason string
	}{
		{"arf-missing-type.eml", false, "lacks required field Feedback-Type and Version"},
		{"arf-no-report-part.eml", false, "no message/feedback-report part"},
		{"dsn-gmail.eml", true, `report-type is "delivery-status"`},
		{"not-a-bounce.eml", true, "no multipart/report"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			r, err := reports.ParseARF(readSample(t, tc.file))
			if err == nil {
				t.Fatalf("parsed %+v, want an error", r)
			}
			if errors.Is(err, reports.ErrNotARF) != tc.notARF {
				t.Errorf("errors.Is(ErrNotARF) = %v for %v", !tc.notARF, err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q lacks %q", err, tc.reason)
			}
		})
	}
}

func TestDecodeTrace(t *testing.T) {
	tests := []struct {
		value string
		want  map[string]any
	}{
		{"eyJfQF8iOiJcXF8vIiwicmVjaXBpZW50IjoiYWxpY2VAb3V0bG9vay5jb20ifQ==", map[string]any{"recipient": "alice@outlook.com"}},
		// Folded across lines, as long values are.
		{"eyJfQF8iOiJcXF8vIiwicmVjaXBpZW50Ijoi\r\n\tYWxpY2VAb3V0bG9vay5jb20ifQ==", map[string]any{"recipient": "alice@outlook.com"}},
		// Valid base64 JSON without the marker is someone else's header.
		{"eyJyZWNpcGllbnQiOiJhQGIuYyJ9", nil},
		{"not base64 at all", nil},
		{"", nil},
	}
	for _, tc := range tests {
		if got := reports.DecodeTrace(tc.value); !sameTrace(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("DecodeTrace(%q) = %v, want %v", tc.value, got, tc.want)
		}
	}
}
