package logs

import (
	"encoding/json"
	"strings"
	"time"
)

// RecordType names the kind of event a Record describes.
type RecordType string

// Record types, named as KumoMTA names them (kumo-log-types RecordType).
const (
	Reception               RecordType = "Reception"
	Delivery                RecordType = "Delivery"
	Bounce                  RecordType = "Bounce"
	TransientFailure        RecordType = "TransientFailure"
	Expiration              RecordType = "Expiration"
	AdminBounce             RecordType = "AdminBounce"
	OOB                     RecordType = "OOB"
	Feedback                RecordType = "Feedback"
	Rejection               RecordType = "Rejection"
	AdminRebind             RecordType = "AdminRebind"
	DeferredInjectionRebind RecordType = "DeferredInjectionRebind"
	Delayed                 RecordType = "Delayed"
	XferOut                 RecordType = "XferOut"
	XferIn                  RecordType = "XferIn"
)

// Uncategorized is the bounce classification KumoMTA gives a record that no
// classifier rule matched. A Record with an empty BounceClassification is
// written with this value.
const Uncategorized = "Uncategorized"

// EnhancedCode is an RFC 3463 enhanced status code.
type EnhancedCode struct {
	Class   int `json:"class"`
	Subject int `json:"subject"`
	Detail  int `json:"detail"`
}

// Response is the SMTP reply an event is about: the one mtakit sent for
// Reception, the one the peer sent for Delivery and failures, or a
// synthesized one for Expiration.
//
// Content is written on a single line: as KumoMTA does, each CR, LF or
// CRLF in it is replaced by one space when the record is encoded.
type Response struct {
	Code         int           `json:"code"`
	EnhancedCode *EnhancedCode `json:"enhanced_code"`
	Content      string        `json:"content"`
	Command      *string       `json:"command"`
}

// PeerAddress names the other end of an SMTP conversation.
type PeerAddress struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// IsSecure reports that the address was resolved through a
	// DNSSEC-validated chain; omitted when false, as KumoMTA does.
	IsSecure bool `json:"is_secure,omitempty"`
}

// SourceAddress is the local address a delivery was made from.
type SourceAddress struct {
	Address  string `json:"address"`
	Server   string `json:"server,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// Record is one log event. Field names and JSON layout follow KumoMTA's
// JsonLogRecord.
//
// When a Record is encoded (by json.Marshal or by the sinks in this
// package) nil Meta and Headers are written as {} and an empty
// BounceClassification as "Uncategorized", because KumoMTA always writes
// them so and its readers reject null there.
type Record struct {
	Type                 RecordType      `json:"type"`
	ID                   string          `json:"id"`
	Sender               string          `json:"sender"`
	Recipient            Recipients      `json:"recipient"`
	Queue                string          `json:"queue"`
	Site                 string          `json:"site"`
	Size                 int64           `json:"size"`
	Response             Response        `json:"response"`
	PeerAddress          *PeerAddress    `json:"peer_address"`
	Timestamp            int64           `json:"timestamp"`
	EventTime            string          `json:"event_time"`
	Created              int64           `json:"created"`
	CreatedTime          string          `json:"created_time"`
	NumAttempts          int             `json:"num_attempts"`
	BounceClassification string          `json:"bounce_classification"`
	EgressPool           *string         `json:"egress_pool"`
	EgressSource         *string         `json:"egress_source"`
	SourceAddress        *SourceAddress  `json:"source_address"`
	FeedbackReport       json.RawMessage `json:"feedback_report"`
	Meta                 map[string]any  `json:"meta"`
	Headers              map[string]any  `json:"headers"`
	DeliveryProtocol     *string         `json:"delivery_protocol"`
	ReceptionProtocol    *string         `json:"reception_protocol"`
	NodeID               string          `json:"nodeid"`
	TLSCipher            string          `json:"tls_cipher,omitempty"`
	TLSProtocolVersion   string          `json:"tls_protocol_version,omitempty"`
	TLSPeerSubjectName   []string        `json:"tls_peer_subject_name,omitempty"`
	ProviderName         string          `json:"provider_name,omitempty"`
	SessionID            string          `json:"session_id,omitempty"`
}

// SetTimes fills Timestamp/EventTime from event and Created/CreatedTime
// from created. The RFC 3339 strings are in UTC with 0, 3, 6 or 9
// fractional digits, as KumoMTA (chrono) writes them.
func (r *Record) SetTimes(event, created time.Time) {
	r.Timestamp = event.Unix()
	r.EventTime = formatRFC3339(event)
	r.Created = created.Unix()
	r.CreatedTime = formatRFC3339(created)
}

// MarshalJSON implements json.Marshaler, applying the encoding rules
// documented on Record. Note that json.Marshal escapes <, > and & in its
// result (as \u003c and so on); a json.Encoder with SetEscapeHTML(false)
// and the sinks in this package write them unescaped, as serde_json does.
func (r Record) MarshalJSON() ([]byte, error) {
	return appendRecord(nil, &r)
}

// singleLine replaces each CRLF, lone CR and lone LF in s by one space,
// like KumoMTA's rfc5321 remove_line_break.
func singleLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				continue // the LF that follows writes the space
			}
			b.WriteByte(' ')
		case '\n':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// formatRFC3339 formats t in UTC like chrono's serde serialization of
// DateTime<Utc> (SecondsFormat::AutoSi with a Z suffix).
func formatRFC3339(t time.Time) string {
	t = t.UTC()
	b := make([]byte, 0, len("2006-01-02T15:04:05.000000000Z"))
	b = t.AppendFormat(b, "2006-01-02T15:04:05")
	b = appendAutoSiFraction(b, t.Nanosecond())
	return string(append(b, 'Z'))
}

// appendAutoSiFraction appends the fractional second ns as chrono's %.f
// and AutoSi do: nothing when ns is zero, else a dot and 3, 6 or 9
// digits, the fewest that represent ns exactly.
func appendAutoSiFraction(b []byte, ns int) []byte {
	var digits, v int
	switch {
	case ns == 0:
		return b
	case ns%1_000_000 == 0:
		digits, v = 3, ns/1_000_000
	case ns%1_000 == 0:
		digits, v = 6, ns/1_000
	default:
		digits, v = 9, ns
	}
	b = append(b, '.')
	var buf [9]byte
	for i := digits - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, buf[:digits]...)
}

// Recipients is one or more recipient addresses. It marshals as a plain
// string when there is exactly one, and as an array otherwise, like
// KumoMTA's OneOrMany.
type Recipients []string

// MarshalJSON implements json.Marshaler.
func (r Recipients) MarshalJSON() ([]byte, error) {
	if len(r) == 1 {
		return appendString(nil, r[0]), nil
	}
	return appendStrings(nil, r), nil
}

// UnmarshalJSON implements json.Unmarshaler, accepting a string or an array.
func (r *Recipients) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*r = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*r = Recipients{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*r = many
	return nil
}

// Sink receives log records. Implementations must be safe for concurrent
// use; Log should not block for long, since it is called on the message
// path. Log must not retain rec after it returns.
type Sink interface {
	Log(rec *Record) error
	Close() error
}
