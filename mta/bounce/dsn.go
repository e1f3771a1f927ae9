package bounce

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNullSender is returned by BuildDSN for a message whose envelope
// sender is the null reverse-path (MAIL FROM:<>): such a message is
// itself a notification, and RFC 5321 §4.5.5 and RFC 3464 forbid
// answering it with another one.
var ErrNullSender = errors.New("bounce: null reverse-path: no delivery status notification may be sent")

// DSN actions (RFC 3464 §2.3.3).
const (
	ActionFailed    = "failed"
	ActionDelayed   = "delayed"
	ActionDelivered = "delivered"
	ActionRelayed   = "relayed"
	ActionExpanded  = "expanded"
)

// DSNOptions describes a delivery status notification.
type DSNOptions struct {
	// ReportingMTA is the host name of the MTA writing the report (ours).
	// It appears in Reporting-MTA, in the From address
	// (MAILER-DAEMON@ReportingMTA) and in the Message-ID. Required.
	ReportingMTA string
	// OriginalID identifies the original message in our spool (its queue
	// ID). It is written as the per-message field X-Mtakit-Queue-ID and
	// quoted in the text part. Optional.
	OriginalID string
	// EnvelopeID is the ENVID the client gave at MAIL FROM (RFC 3461),
	// written as Original-Envelope-Id. Optional.
	EnvelopeID string
	// Sender is the envelope sender (reverse-path) of the original
	// message: the recipient of the DSN. Required, and not null.
	Sender string
	// Recipients are the recipients the report is about. At least one.
	Recipients []RecipientStatus
	// ArrivalDate is when the original message was received. Optional.
	ArrivalDate time.Time
	// ReceivedFromMTA is the host the original message came from, e.g.
	// "client.example.com" or "[192.0.2.1]". Optional.
	ReceivedFromMTA string
	// OriginalHeaders is the header section of the original message. If
	// a whole message is given, only its header section (up to the first
	// empty line) is used. Optional; without it the report has no third
	// part.
	OriginalHeaders []byte
	// Reason is an optional sentence for the human-readable part, e.g.
	// "The message was bounced by the administrator: campaign cancelled".
	Reason string

	// Date is the Date of the report; zero means time.Now().
	Date time.Time
	// MessageID is the report's Message-ID, with or without angle
	// brackets; empty means a random one at ReportingMTA.
	MessageID string
	// Subject overrides the default subject ("Undelivered Mail Returned
	// to Sender"; "Delayed Mail (still being retried)" when no recipient
	// failed and some are delayed; "Successful Mail Delivery Report"
	// otherwise).
	Subject string
	// From overrides the default From field, "Mail Delivery System
	// <MAILER-DAEMON@ReportingMTA>" (KumoMTA's generator, for instance,
	// writes "Mail Delivery Subsystem <mailer-daemon@host>").
	From string
}

// RecipientStatus is the fate of one recipient of the original message.
type RecipientStatus struct {
	// Address is the final recipient address (Final-Recipient). Required.
	Address string
	// OriginalRecipient is the ORCPT the client gave (RFC 3461), without
	// its address type, written as Original-Recipient. Optional.
	OriginalRecipient string
	// Action is "failed", "delayed", "delivered", "relayed" or
	// "expanded". Required.
	Action string
	// Status is the RFC 3463 status code, e.g. "5.1.1". Required.
	Status string
	// DiagnosticCode is the reply of the remote server, normally
	// "smtp; 550 5.1.1 user unknown"; "smtp; " is added when no
	// diagnostic type is given. Optional.
	DiagnosticCode string
	// RemoteMTA is the host that gave the reply, e.g. "mx.example.com";
	// "dns; " is added when no type is given. Optional.
	RemoteMTA string
	// LastAttemptDate is when delivery was last attempted. Optional.
	LastAttemptDate time.Time
	// WillRetryUntil is, for a delayed recipient, when delivery attempts
	// stop. Optional.
	WillRetryUntil time.Time
}

// ShouldSendDSN reports whether a delivery status notification may be
// sent for a message with envelope sender sender: it is false for the
// null reverse-path ("" or "<>"), which marks bounces and other
// notifications that must never be answered by another notification
// (RFC 5321 §4.5.5, RFC 3464 §2).
func ShouldSendDSN(sender string) bool {
	s := strings.TrimSpace(sender)
	return s != "" && s != "<>"
}

// dateLayout is the RFC 5322 date-time format.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// maxHeaderBytes bounds the original headers quoted in a report.
const maxHeaderBytes = 256 << 10

// BuildDSN returns a complete delivery status notification message (RFC
// 3464, in a multipart/report of RFC 6522) for opts: From the mail
// system at ReportingMTA, To the original sender, with a human-readable
// text/plain part, the machine-readable message/delivery-status part and,
// if OriginalHeaders is set, a text/rfc822-headers part. Every line ends
// in CRLF and is at most 998 octets; long fields are folded.
//
// Where an address, diagnostic or the original headers are not ASCII,
// the RFC 6533 types are used (message/global-delivery-status with
// "utf-8" address types, message/global-headers), in 8bit.
//
// The result must be sent with a null envelope sender (MAIL FROM:<>). It
// returns ErrNullSender when opts.Sender is null (see ShouldSendDSN).
func BuildDSN(opts DSNOptions) ([]byte, error) {
	if !ShouldSendDSN(opts.Sender) {
		return nil, ErrNullSender
	}
	host := oneLine(opts.ReportingMTA)
	if host == "" {
		return nil, errors.New("bounce: DSN needs a ReportingMTA")
	}
	if len(opts.Recipients) == 0 {
		return nil, errors.New("bounce: DSN needs at least one recipient")
	}
	sender := stripBrackets(oneLine(opts.Sender))
	recips := make([]RecipientStatus, len(opts.Recipients))
	anyFailed, anyDelayed := false, false
	for i, r := range opts.Recipients {
		r.Address = stripBrackets(oneLine(r.Address))
		r.OriginalRecipient = stripBrackets(oneLine(r.OriginalRecipient))
		r.Action = strings.ToLower(oneLine(r.Action))
		r.Status = oneLine(r.Status)
		r.DiagnosticCode = oneLine(r.DiagnosticCode)
		r.RemoteMTA = oneLine(r.RemoteMTA)
		if r.Address == "" {
			return nil, fmt.Errorf("bounce: DSN recipient %d has no address", i)
		}
		switch r.Action {
		case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
		default:
			return nil, fmt.Errorf("bounce: DSN recipient %s: invalid action %q", r.Address, r.Action)
		}
		if _, _, _, ok := parseEnhanced(r.Status); !ok || !strings.ContainsAny(r.Status[:1], "245") {
			return nil, fmt.Errorf("bounce: DSN recipient %s: invalid status %q (want e.g. 5.1.1)", r.Address, r.Status)
		}
		anyFailed = anyFailed || r.Action == ActionFailed
		anyDelayed = anyDelayed || r.Action == ActionDelayed
		recips[i] = r
	}

	date := opts.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID := strings.Trim(oneLine(opts.MessageID), "<>")
	if msgID == "" {
		msgID = fmt.Sprintf("%s.%s@%s", date.UTC().Format("20060102150405"), randomHex(8), host)
	}
	kind := kindSuccess
	switch {
	case anyFailed:
		kind = kindFailure
	case anyDelayed:
		kind = kindDelay
	}
	subject := oneLine(opts.Subject)
	if subject == "" {
		subject = kind.subject()
	}

	// The parts.
	text := humanText(host, opts, recips, kind, len(opts.OriginalHeaders) > 0)
	status, global := deliveryStatus(host, opts, recips)
	var headers []byte
	if len(opts.OriginalHeaders) > 0 {
		headers = headerSection(opts.OriginalHeaders)
	}
	headersGlobal := !isASCIIBytes(headers)

	boundary := "=_mtakit_" + randomHex(12)
	for bytes.Contains(text, []byte(boundary)) || bytes.Contains(status, []byte(boundary)) || bytes.Contains(headers, []byte(boundary)) {
		boundary = "=_mtakit_" + randomHex(12)
	}
	eightBit := global || headersGlobal

	var b bytes.Buffer
	from := oneLine(opts.From)
	if from == "" {
		from = "Mail Delivery System <MAILER-DAEMON@" + host + ">"
	}
	writeField(&b, "From", from)
	writeField(&b, "To", "<"+sender+">")
	writeField(&b, "Subject", encodeHeaderText(subject))
	writeField(&b, "Date", date.Format(dateLayout))
	writeField(&b, "Message-ID", "<"+msgID+">")
	writeField(&b, "Auto-Submitted", "auto-replied")
	writeField(&b, "MIME-Version", "1.0")
	writeField(&b, "Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	if eightBit {
		writeField(&b, "Content-Transfer-Encoding", "8bit")
	}
	b.WriteString("\r\n")
	b.WriteString("This is a MIME-encapsulated message.\r\n")

	// Part 1: human-readable.
	b.WriteString("\r\n--" + boundary + "\r\n")
	writeField(&b, "Content-Description", "Notification")
	if isASCIIBytes(text) && maxLineLen(text) <= 998 {
		writeField(&b, "Content-Type", "text/plain; charset=us-ascii")
		b.WriteString("\r\n")
		b.Write(text)
	} else {
		writeField(&b, "Content-Type", "text/plain; charset=utf-8")
		writeField(&b, "Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		qp := quotedprintable.NewWriter(&b)
		qp.Write(bytes.ReplaceAll(text, []byte("\r\n"), []byte("\n")))
		qp.Close()
		if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
			b.WriteString("\r\n")
		}
	}

	// Part 2: machine-readable.
	b.WriteString("\r\n--" + boundary + "\r\n")
	writeField(&b, "Content-Description", "Delivery report")
	if global {
		writeField(&b, "Content-Type", "message/global-delivery-status")
		writeField(&b, "Content-Transfer-Encoding", "8bit")
	} else {
		writeField(&b, "Content-Type", "message/delivery-status")
	}
	b.WriteString("\r\n")
	b.Write(status)

	// Part 3: the original headers.
	if len(headers) > 0 {
		b.WriteString("\r\n--" + boundary + "\r\n")
		writeField(&b, "Content-Description", kind.headersDescription())
		if headersGlobal {
			writeField(&b, "Content-Type", "message/global-headers")
			writeField(&b, "Content-Transfer-Encoding", "8bit")
		} else {
			writeField(&b, "Content-Type", "text/rfc822-headers")
		}
		b.WriteString("\r\n")
		b.Write(headers)
	}
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// reportKind is what a report is mainly about.
type reportKind int

const (
	kindFailure reportKind = iota // some recipient failed
	kindDelay                     // none failed, some delayed
	kindSuccess                   // delivered, relayed or expanded only
)

func (k reportKind) subject() string {
	switch k {
	case kindFailure:
		return "Undelivered Mail Returned to Sender"
	case kindDelay:
		return "Delayed Mail (still being retried)"
	}
	return "Successful Mail Delivery Report"
}

func (k reportKind) headersDescription() string {
	switch k {
	case kindFailure:
		return "Undelivered Message Headers"
	case kindDelay:
		return "Delayed Message Headers"
	}
	return "Message Headers"
}

// humanText writes the text/plain part, with CRLF line ends.
func humanText(host string, opts DSNOptions, recips []RecipientStatus, kind reportKind, withHeaders bool) []byte {
	var lines []string
	para := func(s string) {
		lines = append(lines, wrapText(s, 76)...)
		lines = append(lines, "")
	}
	para("This is the mail system at " + host + ".")
	var intro string
	switch kind {
	case kindFailure:
		intro = "Your message could not be delivered to one or more of its recipients. " +
			"The reasons are given below."
	case kindDelay:
		intro = "Your message has not yet been delivered to the recipients listed below. " +
			"The mail system will keep trying to deliver it; you do not need to send it again."
	default:
		intro = "Your message was delivered to the recipients listed below, as you asked to be told."
	}
	if withHeaders {
		intro += " The headers of your message are attached."
	}
	para(intro)
	if r := oneLine(opts.Reason); r != "" {
		para("Reason: " + r)
	}
	if id := oneLine(opts.OriginalID); id != "" {
		para("Message queue ID: " + id)
	}
	for _, r := range recips {
		s := "<" + r.Address + ">: " + r.Action
		if r.RemoteMTA != "" {
			s += "; host " + stripType(r.RemoteMTA) + " said"
		}
		if r.DiagnosticCode != "" {
			s += ": " + stripType(r.DiagnosticCode)
		} else {
			s += " (status " + r.Status + ")"
		}
		if !r.WillRetryUntil.IsZero() && r.Action == ActionDelayed {
			s += ". Delivery will be attempted until " + r.WillRetryUntil.Format(dateLayout) + "."
		}
		para(s)
	}
	return []byte(strings.Join(lines, "\r\n"))
}

// deliveryStatus writes the message/delivery-status body and reports
// whether it needs the RFC 6533 (UTF-8) form.
func deliveryStatus(host string, opts DSNOptions, recips []RecipientStatus) ([]byte, bool) {
	global := false
	addrType := func(a string) string {
		if isASCII(a) {
			return "rfc822; " + a
		}
		global = true
		return "utf-8; " + a
	}
	var b bytes.Buffer
	if id := oneLine(opts.EnvelopeID); id != "" {
		writeField(&b, "Original-Envelope-Id", id)
	}
	writeField(&b, "Reporting-MTA", "dns; "+host)
	if id := oneLine(opts.OriginalID); id != "" {
		writeField(&b, "X-Mtakit-Queue-ID", id)
	}
	if from := oneLine(opts.ReceivedFromMTA); from != "" {
		writeField(&b, "Received-From-MTA", withType(from, "dns"))
	}
	if !opts.ArrivalDate.IsZero() {
		writeField(&b, "Arrival-Date", opts.ArrivalDate.Format(dateLayout))
	}
	for _, r := range recips {
		b.WriteString("\r\n")
		if r.OriginalRecipient != "" {
			writeField(&b, "Original-Recipient", addrType(r.OriginalRecipient))
		}
		writeField(&b, "Final-Recipient", addrType(r.Address))
		writeField(&b, "Action", r.Action)
		writeField(&b, "Status", r.Status)
		if r.RemoteMTA != "" {
			writeField(&b, "Remote-MTA", withType(r.RemoteMTA, "dns"))
		}
		if r.DiagnosticCode != "" {
			writeField(&b, "Diagnostic-Code", withType(r.DiagnosticCode, "smtp"))
		}
		if !r.LastAttemptDate.IsZero() {
			writeField(&b, "Last-Attempt-Date", r.LastAttemptDate.Format(dateLayout))
		}
		if !r.WillRetryUntil.IsZero() && r.Action == ActionDelayed {
			writeField(&b, "Will-Retry-Until", r.WillRetryUntil.Format(dateLayout))
		}
	}
	out := b.Bytes()
	if !isASCIIBytes(out) {
		global = true
	}
	return out, global
}

// headerSection returns the header section of msg (up to, not including,
// the empty line that ends it), with CRLF line ends, lines longer than
// 998 octets folded or split, and at most maxHeaderBytes long (cut at a
// field boundary).
func headerSection(msg []byte) []byte {
	// Normalize line ends to LF for the split, then rejoin with CRLF.
	s := strings.ReplaceAll(string(msg), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i+1]
	} else if strings.HasPrefix(s, "\n") {
		return nil
	}
	var b bytes.Buffer
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if line == "" {
			continue
		}
		startsField := line[0] != ' ' && line[0] != '\t'
		if startsField && b.Len()+len(line) > maxHeaderBytes {
			break
		}
		for _, l := range splitLong(line) {
			b.WriteString(l)
			b.WriteString("\r\n")
		}
	}
	return b.Bytes()
}

// splitLong folds a header line longer than 998 octets: at the last
// space or tab before the limit when there is one, else by inserting a
// fold (which adds a space to the value).
func splitLong(line string) []string {
	const limit = 998
	var out []string
	for len(line) > limit {
		cut := strings.LastIndexAny(line[1:limit], " \t") + 1
		if cut <= 0 {
			cut = limit - 1
			for cut > 1 && !utf8.RuneStart(line[cut]) {
				cut-- // keep UTF-8 sequences whole
			}
			out = append(out, line[:cut])
			line = " " + line[cut:]
			continue
		}
		out = append(out, line[:cut])
		line = line[cut:] // begins with the whitespace: a valid fold
	}
	return append(out, line)
}

// writeField writes "Name: value" folded at spaces so that lines stay
// within 78 octets where possible and never exceed 998.
func writeField(b *bytes.Buffer, name, value string) {
	for i, l := range foldField(name+": "+value, 78) {
		if i > 0 && l[0] != ' ' && l[0] != '\t' {
			b.WriteByte(' ')
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
}

// foldField splits a field line into physical lines of at most width
// octets where spaces allow (folding before a space, per RFC 5322
// §2.2.3), and at most 998 octets in any case. Lines after the first
// begin with the space they were folded at, or, when a word had to be
// split, with no space (writeField adds one).
func foldField(line string, width int) []string {
	var out []string
	for len(line) > width {
		// The last space at or before width (not at 0 and not inside
		// the field name).
		cut := -1
		for i := min(width, len(line)-1); i > 0; i-- {
			if line[i] == ' ' && i > 0 && line[i-1] != ' ' && line[i-1] != ':' {
				cut = i
				break
			}
		}
		if cut < 0 {
			// No space within width: the next space, if the line up
			// to it fits the hard limit.
			if j := strings.IndexByte(line[width:], ' '); j >= 0 && width+j <= 997 {
				cut = width + j
			}
		}
		if cut < 0 {
			if len(line) <= 997 {
				break
			}
			cut = 997
			for cut > 1 && !utf8.RuneStart(line[cut]) {
				cut--
			}
			out = append(out, line[:cut])
			line = line[cut:]
			continue
		}
		out = append(out, line[:cut])
		line = line[cut:]
	}
	return append(out, line)
}

// wrapText wraps a paragraph at width, breaking at spaces; a word longer
// than the limit of 998 octets is split.
func wrapText(s string, width int) []string {
	var out []string
	var cur strings.Builder
	for _, w := range strings.Fields(s) {
		for len(w) > 990 {
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			cut := 990
			for cut > 1 && !utf8.RuneStart(w[cut]) {
				cut--
			}
			out = append(out, w[:cut])
			w = w[cut:]
		}
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			out = append(out, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// oneLine trims s and replaces control characters (CR, LF, tabs, ...)
// by spaces, so that no value can break out of its header field.
func oneLine(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		s = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, s)
	}
	return strings.TrimSpace(s)
}

func stripBrackets(s string) string {
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

// withType prefixes v with "typ; " unless it already starts with a type
// ("smtp;", "dns;", "x-unix;").
func withType(v, typ string) string {
	if i := strings.IndexByte(v, ';'); i > 0 && isAtom(v[:i]) {
		return v
	}
	return typ + "; " + v
}

// stripType removes a leading "type;" from v.
func stripType(v string) string {
	if i := strings.IndexByte(v, ';'); i > 0 && isAtom(v[:i]) {
		return strings.TrimSpace(v[i+1:])
	}
	return v
}

// isAtom reports whether s is a plausible DSN type name.
func isAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

func encodeHeaderText(s string) string {
	if isASCII(s) {
		return s
	}
	return mime.QEncoding.Encode("utf-8", s)
}

func isASCIIBytes(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func maxLineLen(b []byte) int {
	m := 0
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		m = max(m, i)
		b = b[min(i+1, len(b)):]
	}
	return m
}

func randomHex(n int) string {
	buf := make([]byte, n)
	rand.Read(buf)
	return hex.EncodeToString(buf)
}
