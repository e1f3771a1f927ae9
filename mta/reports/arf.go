package reports

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrNotARF is returned (wrapped) by ParseARF for a message that is not a
// multipart/report with report-type feedback-report.
var ErrNotARF = errors.New("reports: not an ARF feedback report")

// FeedbackReport is an RFC 5965 feedback report. Its JSON form is the
// "feedback_report" object of KumoMTA's Feedback log records
// (kumo-log-types ARFReport), field for field, including the spelling
// original_rcpto_to.
type FeedbackReport struct {
	// FeedbackType is "abuse", "fraud", "virus", "other", "not-spam" or
	// "auth-failure" (RFC 5965, RFC 6591), or another registered type.
	FeedbackType string `json:"feedback_type"`
	UserAgent    string `json:"user_agent"`
	Version      string `json:"version"`

	// ArrivalDate is Arrival-Date (or the older Received-Date).
	ArrivalDate        *time.Time `json:"arrival_date"`
	Incidents          *uint32    `json:"incidents"`
	OriginalEnvelopeID *string    `json:"original_envelope_id"`
	OriginalMailFrom   *string    `json:"original_mail_from"`
	ReportingMTA       *MTA       `json:"reporting_mta"`
	SourceIP           *string    `json:"source_ip"`

	AuthenticationResults []string `json:"authentication_results"`
	OriginalRcptTo        []string `json:"original_rcpto_to"`
	ReportedDomain        []string `json:"reported_domain"`
	ReportedURI           []string `json:"reported_uri"`

	// Extensions holds the other fields of the report, by lower-case
	// name.
	Extensions map[string][]string `json:"extensions"`

	// OriginalMessage is the embedded message or header section, with LF
	// line endings; nil when absent.
	OriginalMessage *string `json:"original_message"`
	// SupplementalTrace is the decoded supplemental trace header
	// (X-KumoRef) of the original, without its marker; nil when absent.
	SupplementalTrace map[string]any `json:"supplemental_trace"`

	// Original is the parsed embedded message; nil when absent. It is
	// not part of the JSON form.
	Original *Original `json:"-"`
}

// ParseARF parses an RFC 5965 feedback report: a multipart/report with
// report-type=feedback-report, whose message/feedback-report part holds
// the fields, and whose message/rfc822 or text/rfc822-headers part holds
// the reported message. The error wraps ErrNotARF when data is not such a
// report, and says what is wrong with it when it is one that cannot be
// read: a missing feedback-report part, or a missing Feedback-Type or
// Version field.
func ParseARF(data []byte) (*FeedbackReport, error) {
	_, p, err := readParts(data)
	if err != nil {
		return nil, err
	}
	if p.reportType != "feedback-report" {
		if p.reportType == "" {
			return nil, fmt.Errorf("%w: no multipart/report", ErrNotARF)
		}
		return nil, fmt.Errorf("%w: report-type is %q", ErrNotARF, p.reportType)
	}
	if p.feedback == nil {
		return nil, errors.New("reports: feedback report has no message/feedback-report part")
	}
	fs, _ := parseFields(normalizeNewlines(p.feedback))
	r := &FeedbackReport{Extensions: map[string][]string{}, Original: p.original}
	for _, f := range fs {
		name := strings.ToLower(f.Name)
		v := f.Value
		switch name {
		case "feedback-type":
			r.FeedbackType = strings.ToLower(v)
		case "user-agent":
			r.UserAgent = v
		case "version":
			r.Version = v
		case "arrival-date", "received-date":
			if t := parseDate(v); !t.IsZero() && (r.ArrivalDate == nil || name == "arrival-date") {
				r.ArrivalDate = &t
			}
		case "incidents":
			if n, err := strconv.ParseUint(v, 10, 32); err == nil {
				n32 := uint32(n)
				r.Incidents = &n32
			}
		case "original-envelope-id":
			r.OriginalEnvelopeID = &v
		case "original-mail-from":
			a := bareAddress(v)
			r.OriginalMailFrom = &a
		case "reporting-mta":
			m := parseMTA(v)
			r.ReportingMTA = &m
		case "source-ip":
			r.SourceIP = &v
		case "authentication-results":
			r.AuthenticationResults = append(r.AuthenticationResults, v)
		case "original-rcpt-to":
			r.OriginalRcptTo = append(r.OriginalRcptTo, bareAddress(v))
		case "reported-domain":
			r.ReportedDomain = append(r.ReportedDomain, v)
		case "reported-uri":
			r.ReportedURI = append(r.ReportedURI, v)
		default:
			r.Extensions[name] = append(r.Extensions[name], v)
		}
	}
	var missing []string
	if r.FeedbackType == "" {
		missing = append(missing, "Feedback-Type")
	}
	if r.Version == "" {
		missing = append(missing, "Version")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("reports: feedback report lacks required field %s", strings.Join(missing, " and "))
	}
	if o := p.original; o != nil {
		s := string(o.Raw)
		r.OriginalMessage = &s
		r.SupplementalTrace = o.Correlation().Trace
	}
	for _, l := range []*[]string{&r.AuthenticationResults, &r.OriginalRcptTo, &r.ReportedDomain, &r.ReportedURI} {
		if *l == nil {
			*l = []string{}
		}
	}
	return r, nil
}

// Correlation identifies the reported message from its embedded copy.
func (r *FeedbackReport) Correlation() Correlation { return r.Original.Correlation() }
