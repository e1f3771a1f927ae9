package egress

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// InternalPrefix starts the text of every Response that mtakit synthesizes
// instead of receiving it from a peer: connection failures, timeouts,
// policy refusals. It is KumoMTA's prefix, kept verbatim so that shaping
// automation rules (whose match_internal option tests for it), bounce
// classifiers and log consumers written for KumoMTA treat these responses
// the same way.
const InternalPrefix = "KumoMTA internal: "

// Response is an SMTP reply: one received from a peer, or one synthesized
// by mtakit (its Text then starts with InternalPrefix). It carries what a
// KumoMTA log record's "response" object carries.
type Response struct {
	// Code is the three-digit reply code.
	Code int
	// Enhanced is the RFC 3463 enhanced status code, "4.2.1", or "" when
	// the reply had none.
	Enhanced string
	// Text is the reply text without the code and the enhanced code. The
	// lines of a multi-line reply are joined with "\n" (the enhanced code
	// repeated at the start of continuation lines is removed), as KumoMTA
	// records them.
	Text string
	// Command is the command line the reply answers, as sent and with its
	// CRLF ("MAIL FROM:<a@example.com>\r\n", ".\r\n" for the end of the
	// message data), which is how KumoMTA logs it; "" for the banner and for
	// responses that answer no command.
	Command string
}

// String returns the single-line form KumoMTA uses in log records and
// matches automation rules against: "CODE ENH text" ("CODE text" without
// an enhanced code), each line break in the text replaced by a space.
func (r Response) String() string {
	var b strings.Builder
	b.Grow(len(r.Text) + len(r.Enhanced) + 5)
	b.WriteString(strconv.Itoa(r.Code))
	b.WriteByte(' ')
	if r.Enhanced != "" {
		b.WriteString(r.Enhanced)
		b.WriteByte(' ')
	}
	writeSingleLine(&b, r.Text)
	return b.String()
}

// writeSingleLine writes s with each CRLF, lone CR and lone LF replaced by
// one space, like KumoMTA's rfc5321 remove_line_break.
func writeSingleLine(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				continue // the LF writes the space
			}
			b.WriteByte(' ')
		case '\n':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
}

// Success reports a 2xx reply.
func (r Response) Success() bool { return r.Code >= 200 && r.Code < 300 }

// Transient reports a reply that means "try again later": 4xx, and also
// 3xx and 503 when they end a transaction, which KumoMTA classifies as
// transient failures because they indicate a protocol synchronization
// problem rather than a verdict on the message.
func (r Response) Transient() bool {
	return (r.Code >= 300 && r.Code < 500) || r.Code == 503
}

// Permanent reports a 5xx reply other than 503: the message or recipient
// is refused for good (a Bounce).
func (r Response) Permanent() bool {
	return r.Code >= 500 && r.Code < 600 && r.Code != 503
}

// Internal reports whether mtakit synthesized the response.
func (r Response) Internal() bool { return strings.HasPrefix(r.Text, InternalPrefix) }

// EnhancedCode splits Enhanced into its class, subject and detail; ok is
// false when there is none.
func (r Response) EnhancedCode() (class, subject, detail int, ok bool) {
	c, s, d, ok := parseEnhanced(r.Enhanced)
	return c, s, d, ok
}

// parseEnhanced parses "C.S.D": C one of 2, 4, 5 and S and D one to three
// digits.
func parseEnhanced(s string) (class, subject, detail int, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 {
		return 0, 0, 0, false
	}
	var n [3]int
	for i, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return 0, 0, 0, false
		}
		for j := 0; j < len(p); j++ {
			if p[j] < '0' || p[j] > '9' {
				return 0, 0, 0, false
			}
			n[i] = n[i]*10 + int(p[j]-'0')
		}
	}
	if n[0] != 2 && n[0] != 4 && n[0] != 5 {
		return 0, 0, 0, false
	}
	return n[0], n[1], n[2], true
}

// splitEnhanced separates a leading enhanced status code ("4.2.1 text")
// from a reply text.
func splitEnhanced(text string) (enh, rest string) {
	i := strings.IndexByte(text, ' ')
	cand := text
	if i >= 0 {
		cand = text[:i]
	}
	if _, _, _, ok := parseEnhanced(cand); !ok {
		return "", text
	}
	if i < 0 {
		return cand, ""
	}
	return cand, text[i+1:]
}

// ResponseError is a failure that has a Response to log: every error from
// Dial, and the connection-level errors from Send. Response is what
// KumoMTA would record for the affected messages; Err is the underlying
// cause (a network error, a context error, ...) when there is one.
type ResponseError struct {
	Response Response
	Err      error
}

func (e *ResponseError) Error() string {
	return "egress: " + e.Response.String()
}

// Unwrap returns the underlying cause.
func (e *ResponseError) Unwrap() error { return e.Err }

// ResponseOf returns the Response carried by err (a *ResponseError
// anywhere in its chain).
func ResponseOf(err error) (Response, bool) {
	var re *ResponseError
	if errors.As(err, &re) {
		return re.Response, true
	}
	return Response{}, false
}

// internal builds a synthesized response.
func internal(code int, enh, format string, args ...any) Response {
	return Response{Code: code, Enhanced: enh, Text: InternalPrefix + fmt.Sprintf(format, args...)}
}
