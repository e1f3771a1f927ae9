// Package logs writes mtakit's structured event log: one JSON object per
// line for every reception, delivery, failure, bounce and expiration, with
// the field names of KumoMTA's JsonLogRecord so KumoMTA log tooling can read
// them.
package logs

import (
	"encoding/json"
	"time"
)

// RecordType names the kind of event a Record describes.
type RecordType string

// Record types, named as KumoMTA names them.
const (
	Reception        RecordType = "Reception"
	Delivery         RecordType = "Delivery"
	Bounce           RecordType = "Bounce"
	TransientFailure RecordType = "TransientFailure"
	Expiration       RecordType = "Expiration"
	AdminBounce      RecordType = "AdminBounce"
	OOB              RecordType = "OOB"
	Feedback         RecordType = "Feedback"
	Rejection        RecordType = "Rejection"
)

// EnhancedCode is an RFC 3463 enhanced status code.
type EnhancedCode struct {
	Class   int `json:"class"`
	Subject int `json:"subject"`
	Detail  int `json:"detail"`
}

// Response is the SMTP reply an event is about: the one mtakit sent for
// Reception, the one the peer sent for Delivery and failures, or a
// synthesized one for Expiration.
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
}

// SourceAddress is the local address a delivery was made from.
type SourceAddress struct {
	Address  string `json:"address"`
	Protocol string `json:"protocol,omitempty"`
	Server   string `json:"server,omitempty"`
}

// Record is one log event. Field names and JSON layout follow KumoMTA's
// JsonLogRecord.
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
// from created.
func (r *Record) SetTimes(event, created time.Time) {
	r.Timestamp = event.Unix()
	r.EventTime = event.UTC().Format(time.RFC3339Nano)
	r.Created = created.Unix()
	r.CreatedTime = created.UTC().Format(time.RFC3339Nano)
}

// Recipients is one or more recipient addresses. It marshals as a plain
// string when there is exactly one, and as an array otherwise, like
// KumoMTA's OneOrMany.
type Recipients []string

// MarshalJSON implements json.Marshaler.
func (r Recipients) MarshalJSON() ([]byte, error) {
	if len(r) == 1 {
		return json.Marshal(r[0])
	}
	if r == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(r))
}

// UnmarshalJSON implements json.Unmarshaler, accepting a string or an array.
func (r *Recipients) UnmarshalJSON(b []byte) error {
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
// path.
type Sink interface {
	Log(rec *Record) error
	Close() error
}
