package reports

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
)

// ErrNotDSN is returned (wrapped) by ParseDSN for a message that is not a
// delivery status notification in any form it knows.
var ErrNotDSN = errors.New("reports: not a delivery status notification")

// Limits that bound the work a hostile report can cause.
const (
	maxParts      = 64      // MIME parts visited per message
	maxDepth      = 4       // multipart nesting followed
	maxPartBytes  = 8 << 20 // bytes read from one part
	maxRecipients = 1000    // per-recipient groups read from one DSN
)

// Action is the Action field of a per-recipient group (RFC 3464 §2.3.3).
type Action string

// Actions of RFC 3464.
const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
	Expanded  Action = "expanded"
)

// Format says which shape of report a DSN was parsed from.
type Format string

// Formats recognized by ParseDSN.
const (
	// FormatRFC3464 is a multipart/report with a message/delivery-status
	// (or message/global-delivery-status) part. Gmail, Outlook.com,
	// Exchange, Yahoo, Postfix, Exim and most others send this.
	FormatRFC3464 Format = "rfc3464"
	// FormatQmail is qmail's text ("<user@example.com>:" then the
	// reason), which Yahoo and other qmail-derived systems also send.
	FormatQmail Format = "qmail"
	// FormatExim is Exim's text without a delivery-status part ("The
	// following address(es) failed:").
	FormatExim Format = "exim"
	// FormatGmailText is Gmail's human-readable text ("Your message
	// wasn't delivered to ..." / "Delivery to the following recipient
	// failed permanently") without a delivery-status part.
	FormatGmailText Format = "gmail-text"
	// FormatExchangeText is Microsoft Exchange / Outlook text ("Delivery
	// has failed to these recipients or groups", "Remote Server returned
	// '...'") without a delivery-status part.
	FormatExchangeText Format = "exchange-text"
)

// MTA names a host in a report: a name type ("dns") and the name. Its
// JSON form is KumoMTA's RemoteMta.
type MTA struct {
	Type string `json:"mta_type"`
	Name string `json:"name"`
}

// Status is an RFC 3463 status code, "class.subject.detail".
type Status struct {
	Class, Subject, Detail int
}

// String returns "5.1.1", or "" for the zero Status.
func (s Status) String() string {
	if s == (Status{}) {
		return ""
	}
	return strconv.Itoa(s.Class) + "." + strconv.Itoa(s.Subject) + "." + strconv.Itoa(s.Detail)
}

// ParseStatus parses "5.1.1" (a comment after a space is ignored).
func ParseStatus(s string) (Status, error) {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t("); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Status{}, fmt.Errorf("reports: invalid status %q", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 999 || len(p) > 3 {
			return Status{}, fmt.Errorf("reports: invalid status %q", s)
		}
		n[i] = v
	}
	if n[0] != 2 && n[0] != 4 && n[0] != 5 {
		return Status{}, fmt.Errorf("reports: invalid status class in %q", s)
	}
	return Status{n[0], n[1], n[2]}, nil
}

// Diagnostic is a Diagnostic-Code field: its type ("smtp", "x-unix", ...)
// and text.
type Diagnostic struct {
	Type string
	Text string
}

// RecipientReport is the fate of one recipient, from a per-recipient
// group of a DSN or from the text of a non-standard bounce.
type RecipientReport struct {
	// FinalRecipient is the address the reporting MTA tried; its type
	// (almost always "rfc822") is FinalRecipientType.
	FinalRecipient     string
	FinalRecipientType string
	// OriginalRecipient is the address the sender gave (ORCPT), "" when
	// the report does not say.
	OriginalRecipient string
	Action            Action
	Status            Status
	RemoteMTA         MTA
	Diagnostic        Diagnostic
	LastAttemptDate   time.Time
	WillRetryUntil    time.Time
	FinalLogID        string
	// Fields holds every field of the group as written, extensions
	// (X-Display-Name, X-Supplementary-Info, ...) included.
	Fields Fields
}

// Recipient returns the original recipient when the report gives one, and
// the final recipient otherwise: the address the sender mailed.
func (r *RecipientReport) Recipient() string {
	if r.OriginalRecipient != "" {
		return r.OriginalRecipient
	}
	return r.FinalRecipient
}

// Reply is an SMTP reply: code, enhanced status code ("5.1.1" or "") and
// text.
type Reply struct {
	Code     int
	Enhanced string
	Text     string
}

// Reply returns the SMTP reply the report gives for this recipient, for
// classification: from the diagnostic when it holds one ("smtp; 550 5.1.1
// user unknown"), completed by the Status field. The code defaults to
// 550, 450 or 250 by the status class, and the text to the whole
// diagnostic.
func (r *RecipientReport) Reply() Reply {
	rep := parseReplyText(r.Diagnostic.Text)
	if rep.Enhanced == "" {
		rep.Enhanced = r.Status.String()
	}
	if rep.Code == 0 {
		switch {
		case r.Status.Class == 2:
			rep.Code = 250
		case r.Status.Class == 4 || r.Action == Delayed:
			rep.Code = 450
		default:
			rep.Code = 550
		}
	}
	return rep
}

// DSN is a parsed delivery status notification.
type DSN struct {
	// Format is the shape the report was parsed from.
	Format Format
	// ReportingMTA, OriginalEnvelopeID, DSNGateway, ReceivedFromMTA and
	// ArrivalDate are the per-message fields (RFC 3464 §2.2); zero when
	// absent, and always for a non-standard bounce.
	ReportingMTA       MTA
	OriginalEnvelopeID string
	DSNGateway         MTA
	ReceivedFromMTA    MTA
	ArrivalDate        time.Time
	// PerMessage holds every per-message field as written.
	PerMessage Fields
	// Recipients are the per-recipient reports, in order. There is at
	// least one.
	Recipients []RecipientReport
	// Original is the copy of the original message (or its headers), nil
	// when the report has none.
	Original *Original
	// Subject and From are those of the report message itself.
	Subject, From string
}

// Failed returns the recipients whose Action is failed.
func (d *DSN) Failed() []RecipientReport {
	var out []RecipientReport
	for _, r := range d.Recipients {
		if r.Action == Failed {
			out = append(out, r)
		}
	}
	return out
}

// mimeParts is what a walk over a report's MIME structure found.
type mimeParts struct {
	reportType string // report-type of the multipart/report, "" if none
	status     []byte // the delivery-status part
	feedback   []byte // the feedback-report part
	original   *Original
	text       [][]byte // text/plain parts, or the body of a single-part message
	visited    int
	walkErr    error // the first structural error met, for the reason
}

// readParts walks the MIME structure of data.
func readParts(data []byte) (*message.Entity, *mimeParts, error) {
	e, err := message.Read(bytes.NewReader(data))
	if e == nil {
		return nil, nil, fmt.Errorf("reports: read message header: %w", err)
	}
	p := &mimeParts{}
	p.walk(e, 0)
	return e, p, nil
}

func (p *mimeParts) walk(e *message.Entity, depth int) {
	p.visited++
	mt, params, _ := e.Header.ContentType()
	mt = strings.ToLower(mt)
	if mr := e.MultipartReader(); mr != nil {
		if mt == "multipart/report" && p.reportType == "" {
			p.reportType = strings.ToLower(params["report-type"])
		}
		if depth >= maxDepth {
			return
		}
		for p.visited < maxParts {
			part, err := mr.NextPart()
			if err == io.EOF {
				return
			}
			if part == nil {
				if p.walkErr == nil {
					p.walkErr = err
				}
				return
			}
			p.walk(part, depth+1)
		}
		return
	}
	body, err := io.ReadAll(io.LimitReader(e.Body, maxPartBytes))
	if err != nil && p.walkErr == nil {
		p.walkErr = err
	}
	switch mt {
	case "message/delivery-status", "message/global-delivery-status":
		if p.status == nil {
			p.status = body
		}
	case "message/feedback-report":
		if p.feedback == nil {
			p.feedback = body
		}
	case "message/rfc822", "message/global":
		if p.original == nil {
			p.original = newOriginal(body, false)
		}
	case "text/rfc822-headers", "message/global-headers":
		if p.original == nil {
			p.original = newOriginal(body, true)
		}
	case "", "text/plain":
		p.text = append(p.text, normalizeNewlines(body))
	}
}

// ParseDSN parses a delivery status notification: an RFC 3464
// multipart/report with a delivery-status part, or one of the
// non-standard bounce texts listed with the Format values. The error
// wraps ErrNotDSN when data is not a bounce in any of these forms, and
// says what is wrong with it otherwise.
func ParseDSN(data []byte) (*DSN, error) {
	e, p, err := readParts(data)
	if err != nil {
		return nil, err
	}
	d := &DSN{Original: p.original}
	d.Subject, _ = e.Header.Text("Subject")
	d.From = e.Header.Get("From")
	if p.status != nil {
		if err := d.parseStatus(normalizeNewlines(p.status)); err != nil {
			return nil, err
		}
		d.Format = FormatRFC3464
		return d, nil
	}
	if p.reportType == "feedback-report" {
		return nil, fmt.Errorf("%w: a feedback report (ARF)", ErrNotDSN)
	}
	for _, t := range p.text {
		if f, rcpts := parseBounceText(t); len(rcpts) > 0 {
			d.Format, d.Recipients = f, rcpts
			if d.Original == nil {
				d.Original = quotedOriginal(t)
			}
			return d, nil
		}
	}
	switch {
	case p.reportType != "":
		return nil, fmt.Errorf("reports: multipart/report (report-type %q) has no delivery-status part", p.reportType)
	case p.walkErr != nil:
		return nil, fmt.Errorf("%w: malformed MIME structure: %v", ErrNotDSN, p.walkErr)
	}
	return nil, fmt.Errorf("%w: no delivery-status part and no known bounce text", ErrNotDSN)
}

// parseStatus parses the body of a delivery-status part.
func (d *DSN) parseStatus(body []byte) error {
	groups := fieldGroups(body, maxRecipients+1)
	if len(groups) == 0 {
		return errors.New("reports: empty delivery-status part")
	}
	if groups[0].Get("Final-Recipient") == "" && groups[0].Get("Original-Recipient") == "" {
		d.parsePerMessage(groups[0])
		groups = groups[1:]
	}
	var errs []error
	for i, g := range groups {
		r, err := parseRecipientGroup(g)
		if err != nil {
			errs = append(errs, fmt.Errorf("recipient group %d: %w", i+1, err))
			continue
		}
		d.Recipients = append(d.Recipients, r)
	}
	if len(d.Recipients) == 0 {
		if len(errs) == 0 {
			return errors.New("reports: delivery-status part has no per-recipient fields")
		}
		return fmt.Errorf("reports: delivery-status part: %w", errors.Join(errs...))
	}
	return nil
}

func (d *DSN) parsePerMessage(g Fields) {
	d.PerMessage = g
	d.ReportingMTA = parseMTA(g.Get("Reporting-MTA"))
	d.OriginalEnvelopeID = g.Get("Original-Envelope-Id")
	d.DSNGateway = parseMTA(g.Get("DSN-Gateway"))
	d.ReceivedFromMTA = parseMTA(g.Get("Received-From-MTA"))
	d.ArrivalDate = parseDate(g.Get("Arrival-Date"))
}

func parseMTA(s string) MTA {
	t, v := typedValue(s)
	if t == "" && v != "" {
		t = "dns"
	}
	return MTA{Type: t, Name: v}
}

// parseDate parses an RFC 5322 date as reports write it, or returns the
// zero time.
func parseDate(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := mail.ParseDate(s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// parseRecipientGroup parses one per-recipient group. It is lenient
// where senders are sloppy: a missing Action is derived from the status
// class, a missing Status from the diagnostic's reply, and type prefixes
// are optional.
func parseRecipientGroup(g Fields) (RecipientReport, error) {
	r := RecipientReport{Fields: g}
	r.FinalRecipientType, r.FinalRecipient = typedValue(g.Get("Final-Recipient"))
	r.FinalRecipient = bareAddress(r.FinalRecipient)
	if orig := g.Get("Original-Recipient"); orig != "" {
		_, o := typedValue(orig)
		r.OriginalRecipient = bareAddress(o)
	}
	if r.FinalRecipient == "" {
		if r.OriginalRecipient == "" {
			return r, errors.New("no Final-Recipient")
		}
		r.FinalRecipient = r.OriginalRecipient
	}
	if r.FinalRecipientType == "" {
		r.FinalRecipientType = "rfc822"
	}
	if dc := g.Get("Diagnostic-Code"); dc != "" {
		r.Diagnostic.Type, r.Diagnostic.Text = typedValue(dc)
	}
	r.RemoteMTA = parseMTA(g.Get("Remote-MTA"))
	r.LastAttemptDate = parseDate(g.Get("Last-Attempt-Date"))
	r.WillRetryUntil = parseDate(g.Get("Will-Retry-Until"))
	r.FinalLogID = g.Get("Final-Log-ID")

	if s := g.Get("Status"); s != "" {
		st, err := ParseStatus(s)
		if err != nil {
			return r, err
		}
		r.Status = st
	} else if rep := parseReplyText(r.Diagnostic.Text); rep.Enhanced != "" {
		r.Status, _ = ParseStatus(rep.Enhanced)
	} else if rep.Code >= 200 {
		r.Status = Status{Class: rep.Code / 100}
	}

	if a := strings.ToLower(strings.TrimSpace(g.Get("Action"))); a != "" {
		// Some reporters add a comment: "failed (bad destination mailbox address)".
		if i := strings.IndexAny(a, " \t("); i >= 0 {
			a = a[:i]
		}
		switch Action(a) {
		case Failed, Delayed, Delivered, Relayed, Expanded:
			r.Action = Action(a)
		default:
			return r, fmt.Errorf("invalid Action %q", a)
		}
	} else {
		switch r.Status.Class {
		case 5:
			r.Action = Failed
		case 4:
			r.Action = Delayed
		case 2:
			r.Action = Delivered
		}
	}
	if r.Action == "" {
		return r, errors.New("no Action and no Status")
	}
	if r.Status == (Status{}) {
		switch r.Action {
		case Failed:
			r.Status = Status{5, 0, 0}
		case Delayed:
			r.Status = Status{4, 0, 0}
		default:
			r.Status = Status{2, 0, 0}
		}
	}
	return r, nil
}

// parseReplyText finds an SMTP reply at the start of a diagnostic text:
// "550 5.1.1 text", "550-5.1.1 text", "550 text", "#550 5.1.1 text",
// "554: text", "5.1.1 text". The repeated "550-5.1.1 " prefixes of a
// multi-line reply that was unfolded into one line are removed. A text
// without a reply is returned whole, with Code 0.
func parseReplyText(s string) Reply {
	s = strings.TrimSpace(s)
	rest := strings.TrimLeft(s, "#")
	var rep Reply
	if len(rest) >= 3 && isDigits(rest[:3]) && rest[0] >= '2' && rest[0] <= '5' &&
		(len(rest) == 3 || strings.ContainsRune(" -:", rune(rest[3]))) {
		rep.Code, _ = strconv.Atoi(rest[:3])
		rest = strings.TrimLeft(rest[3:], " -:")
	} else {
		rest = s
	}
	if w, after, _ := strings.Cut(rest, " "); w != "" {
		w = strings.TrimRight(w, ",;:")
		if st, err := ParseStatus(w); err == nil && (rep.Code == 0 || st.Class == rep.Code/100) {
			rep.Enhanced = st.String()
			rest = strings.TrimSpace(after)
		}
	}
	if rep.Code != 0 {
		code := strconv.Itoa(rep.Code)
		if rep.Enhanced != "" {
			rest = strings.ReplaceAll(rest, " "+code+"-"+rep.Enhanced+" ", " ")
			rest = strings.ReplaceAll(rest, " "+code+" "+rep.Enhanced+" ", " ")
		}
		rest = strings.ReplaceAll(rest, " "+code+"-", " ")
	}
	rep.Text = strings.TrimSpace(rest)
	return rep
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
