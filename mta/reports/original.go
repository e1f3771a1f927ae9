package reports

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// Original is the copy of the reported message that a report carries: a
// whole message (message/rfc822) or only its header section
// (text/rfc822-headers, or a copy quoted in the text of a bounce).
type Original struct {
	// Header is the header section of the original message.
	Header Fields
	// Raw is the original as embedded, with LF line endings.
	Raw []byte
	// HeadersOnly is true when the report carried only the header
	// section.
	HeadersOnly bool
}

func newOriginal(raw []byte, headersOnly bool) *Original {
	raw = normalizeNewlines(raw)
	// Some reporters indent or precede the copy with blank lines.
	trimmed := bytes.TrimLeft(raw, "\n")
	h, _ := parseFields(trimmed)
	return &Original{Header: h, Raw: trimmed, HeadersOnly: headersOnly}
}

// TraceMarker is the value of the "_@_" key that identifies a KumoMTA
// supplemental trace header (X-KumoRef by default): base64 of a JSON
// object holding the marker, the recipient and chosen meta values.
const TraceMarker = `\_/`

// Correlation identifies the message a report is about, as far as the
// copy of it in the report allows.
type Correlation struct {
	// MessageID is the Message-ID of the original, without angle
	// brackets; "" when absent.
	MessageID string `json:"message_id,omitempty"`
	// QueueID is the queue (spool) ID that mtakit gave the original: the
	// id clause of the first Received field marked "(mtakit)"; "" when
	// there is none.
	QueueID string `json:"queue_id,omitempty"`
	// Trace is the decoded supplemental trace header without its
	// marker: "recipient" and the meta values the listener was
	// configured to include; nil when absent.
	Trace map[string]any `json:"trace,omitempty"`
}

// IsZero reports whether nothing was found.
func (c Correlation) IsZero() bool {
	return c.MessageID == "" && c.QueueID == "" && c.Trace == nil
}

// Correlation extracts what identifies the original message. It is the
// zero Correlation for a nil Original.
func (o *Original) Correlation() Correlation {
	var c Correlation
	if o == nil {
		return c
	}
	c.MessageID = strings.TrimSpace(strings.Trim(strings.TrimSpace(o.Header.Get("Message-ID")), "<>"))
	for _, f := range o.Header {
		switch {
		case c.QueueID == "" && strings.EqualFold(f.Name, "Received"):
			c.QueueID = receivedID(f.Value)
		case c.Trace == nil && len(f.Name) > 2 && strings.EqualFold(f.Name[:2], "X-"):
			c.Trace = DecodeTrace(f.Value)
		}
	}
	return c
}

// DecodeTrace decodes a supplemental trace header value (as KumoMTA and
// mtakit write X-KumoRef), ignoring whitespace from folding. It returns
// the object without its marker, or nil when value is not such a header.
func DecodeTrace(value string) map[string]any {
	value = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, value)
	if len(value) < 8 || len(value) > 64<<10 {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil
	}
	var obj map[string]any
	if json.Unmarshal(b, &obj) != nil {
		return nil
	}
	if m, _ := obj["_@_"].(string); m != TraceMarker {
		return nil
	}
	delete(obj, "_@_")
	return obj
}

// receivedID returns the id clause of a Received value written by mtakit
// ("by HOST (mtakit) with ESMTP id ID"), or "".
func receivedID(v string) string {
	if !strings.Contains(v, "(mtakit)") {
		return ""
	}
	words := strings.Fields(v)
	for i := 0; i+1 < len(words); i++ {
		if strings.EqualFold(words[i], "id") {
			return strings.TrimRight(words[i+1], ";")
		}
	}
	return ""
}

// quotedOriginal finds a copy of the original message quoted in the text
// of a bounce: the header section that follows one of the usual
// separator lines ("--- Below this line is a copy of the message.",
// "------ This is a copy of the message, including all the headers.",
// "----- Original message -----", ...) or, failing those, the first line
// that starts a Received or Return-Path field. It returns nil when there
// is none.
func quotedOriginal(text []byte) *Original {
	lines := bytes.SplitAfter(text, []byte("\n"))
	start := -1
	for i, l := range lines {
		s := strings.ToLower(strings.TrimSpace(string(l)))
		if strings.HasPrefix(s, "---") && (strings.Contains(s, "copy of the message") ||
			strings.Contains(s, "original message") || strings.Contains(s, "message headers") ||
			strings.Contains(s, "returned message") || strings.Contains(s, "undelivered message")) {
			start = i + 1
			break
		}
	}
	if start < 0 {
		for i, l := range lines {
			if hasPrefixFold(l, "Received:") || hasPrefixFold(l, "Return-Path:") {
				start = i
				break
			}
		}
	}
	if start < 0 {
		return nil
	}
	rest := bytes.Join(lines[start:], nil)
	// Skip blank and indented lines between the separator and the copy.
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 || len(bytes.TrimSpace(rest[:i])) > 0 {
			break
		}
		rest = rest[i+1:]
	}
	o := newOriginal(rest, true)
	if len(o.Header) == 0 {
		return nil
	}
	return o
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}
