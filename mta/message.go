package mta

import (
	"bytes"
	"strings"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// Meta keys the server sets or reads, named as KumoMTA names them.
const (
	MetaQueue             = "queue"
	MetaTenant            = "tenant"
	MetaCampaign          = "campaign"
	MetaRoutingDomain     = "routing_domain"
	MetaReceptionProtocol = "reception_protocol"
	MetaReceivedVia       = "received_via"
	MetaReceivedFrom      = "received_from"
	MetaHostname          = "hostname"
	MetaEHLODomain        = "ehlo_domain"
	MetaTLSCipher         = "tls_cipher"
	MetaTLSVersion        = "tls_protocol_version"
	MetaLogOOB            = "log_oob"
	MetaLogARF            = "log_arf"
)

// Message is a message being received, as the policy hooks see it: its
// envelope, metadata and content. It is not safe for concurrent use.
type Message struct {
	id         spool.ID
	sender     string
	recipients []string
	meta       map[string]any
	data       []byte
	prefix     []byte // header fields prepended to data, not yet joined (see PrependRaw)
}

// ID returns the spool ID assigned to the message.
func (m *Message) ID() spool.ID { return m.id }

// Created returns the reception time, which is encoded in the ID.
func (m *Message) Created() time.Time { return m.id.Time() }

// Sender returns the envelope sender ("" for the null reverse-path).
func (m *Message) Sender() string { return m.sender }

// Recipients returns the envelope recipients of this message.
func (m *Message) Recipients() []string { return m.recipients }

// Meta returns the metadata value for key, or nil.
func (m *Message) Meta(key string) any { return m.meta[key] }

// MetaString returns the metadata value for key if it is a string.
func (m *Message) MetaString(key string) string {
	s, _ := m.meta[key].(string)
	return s
}

// SetMeta sets a metadata value. Values must be JSON-encodable; user keys
// should not collide with the names above (KumoMTA suggests an "x_" prefix).
func (m *Message) SetMeta(key string, value any) {
	if value == nil {
		delete(m.meta, key)
		return
	}
	m.meta[key] = value
}

// Data returns the complete message, header and body, CRLF line endings.
func (m *Message) Data() []byte {
	m.flatten()
	return m.data
}

// SetData replaces the message content.
func (m *Message) SetData(data []byte) { m.prefix, m.data = nil, data }

// PrependHeader adds a header field at the top of the message. value may
// contain folded lines ("\r\n\t...").
func (m *Message) PrependHeader(name, value string) {
	m.PrependRaw([]byte(name + ": " + value + "\r\n"))
}

// PrependRaw adds raw, CRLF-terminated header fields at the top of the
// message (for example DKIM-Signature fields from a dkim.Signer).
//
// The fields are kept apart from the received data until the complete
// message is needed, so the trace and signature fields added to each of
// a transaction's messages cost one copy of the data, not one per field.
func (m *Message) PrependRaw(fields []byte) {
	p := make([]byte, 0, len(fields)+len(m.prefix))
	m.prefix = append(append(p, fields...), m.prefix...)
}

// flatten joins the prepended fields and the data.
func (m *Message) flatten() {
	if len(m.prefix) == 0 {
		return
	}
	out := make([]byte, 0, len(m.prefix)+len(m.data))
	m.data = append(append(out, m.prefix...), m.data...)
	m.prefix = nil
}

// joined returns the complete message without keeping the joined copy,
// so that data shared with other messages stays shared.
func (m *Message) joined() []byte {
	if len(m.prefix) == 0 {
		return m.data
	}
	out := make([]byte, 0, len(m.prefix)+len(m.data))
	return append(append(out, m.prefix...), m.data...)
}

// size is len(m.Data()) without joining.
func (m *Message) size() int { return len(m.prefix) + len(m.data) }

// RemoveHeader removes every header field called name (ASCII
// case-insensitive), continuation lines included; the body and the other
// fields are kept byte for byte.
func (m *Message) RemoveHeader(name string) {
	m.flatten()
	m.data = removeHeader(m.data, name)
}

// Header returns the unfolded value of the first header field called name
// (case-insensitive), and whether there was one.
func (m *Message) Header(name string) (string, bool) {
	if v, ok := headerValue(m.prefix, name); ok {
		return v, true
	}
	return headerValue(m.data, name)
}

// QueueName returns the scheduled queue the message belongs to: the
// "queue" meta value if set, otherwise KumoMTA's
// campaign:tenant@domain!routing_domain form built from the meta values and
// the first recipient's domain.
func (m *Message) QueueName() string {
	if q := m.MetaString(MetaQueue); q != "" {
		return q
	}
	domain := ""
	if len(m.recipients) > 0 {
		domain = recipientDomain(m.recipients[0])
	}
	return QueueName(m.MetaString(MetaCampaign), m.MetaString(MetaTenant), domain, m.MetaString(MetaRoutingDomain))
}

// QueueName formats a scheduled queue name as KumoMTA does:
// "campaign:tenant@domain", "campaign:@domain", "tenant@domain" or
// "domain", with "!routing_domain" appended when set.
func QueueName(campaign, tenant, domain, routingDomain string) string {
	var b strings.Builder
	switch {
	case campaign != "":
		b.WriteString(campaign + ":" + tenant + "@")
	case tenant != "":
		b.WriteString(tenant + "@")
	}
	b.WriteString(strings.ToLower(domain))
	if routingDomain != "" {
		b.WriteString("!" + routingDomain)
	}
	return b.String()
}

// ParseQueueName splits a queue name into its parts, the inverse of
// QueueName.
func ParseQueueName(name string) (campaign, tenant, domain, routingDomain string) {
	prefix, rest, ok := strings.Cut(name, "@")
	if !ok {
		rest, prefix = name, ""
	}
	if c, t, ok := strings.Cut(prefix, ":"); ok {
		campaign, tenant = c, t
	} else {
		tenant = prefix
	}
	domain, routingDomain, _ = strings.Cut(rest, "!")
	return campaign, tenant, domain, routingDomain
}

func recipientDomain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// headerValue finds the first header field called name in the header block
// of msg and returns its unfolded value.
func headerValue(msg []byte, name string) (string, bool) {
	for len(msg) > 0 {
		end := bytes.Index(msg, []byte("\r\n"))
		if end <= 0 { // end of header block or no line ending
			return "", false
		}
		line := msg[:end]
		msg = msg[end+2:]
		colon := bytes.IndexByte(line, ':')
		if colon < 0 || !asciiEqualFold(bytes.TrimRight(line[:colon], " \t"), name) {
			continue
		}
		value := string(bytes.TrimSpace(line[colon+1:]))
		// Unfold continuation lines.
		for len(msg) > 0 && (msg[0] == ' ' || msg[0] == '\t') {
			end := bytes.Index(msg, []byte("\r\n"))
			if end < 0 {
				end = len(msg)
			}
			value += " " + string(bytes.TrimSpace(msg[:end]))
			msg = msg[min(end+2, len(msg)):]
		}
		return value, true
	}
	return "", false
}

// asciiEqualFold compares a field name case-insensitively in ASCII only:
// field names are ASCII (RFC 5322), and Unicode folding would let
// "\u017fubject" (long s) or "\u212a" (Kelvin sign) stand for "Subject" or "K".
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// removeHeader returns msg without any header field called name (ASCII
// case-insensitive), continuation lines included; the body and the other
// fields are kept byte for byte. msg has CRLF line ends.
func removeHeader(msg []byte, name string) []byte {
	var out []byte
	rest := msg
	pos := 0
	removing := false
	for len(rest) > 0 {
		end := bytes.Index(rest, []byte("\r\n"))
		if end < 0 {
			end = len(rest)
		} else {
			end += 2
		}
		line := rest[:end]
		if bytes.Equal(line, []byte("\r\n")) {
			break // end of the header block
		}
		switch {
		case line[0] == ' ' || line[0] == '\t':
			// continuation: follows its field
		default:
			colon := bytes.IndexByte(line, ':')
			removing = colon > 0 && asciiEqualFold(bytes.TrimRight(line[:colon], " \t"), name)
		}
		if removing {
			if out == nil {
				out = append(make([]byte, 0, len(msg)), msg[:pos]...)
			}
		} else if out != nil {
			out = append(out, line...)
		}
		pos += end
		rest = rest[end:]
	}
	if out == nil {
		return msg
	}
	return append(out, msg[pos:]...)
}
