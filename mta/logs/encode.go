package logs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// This file encodes a Record without reflection. Log spends most of its
// time here, on the caller's goroutine, so it matters: this is about four
// times faster than encoding/json. The output is byte for byte what a
// json.Encoder with SetEscapeHTML(false) writes for the normalized
// record (see TestAppendRecordMatchesEncodingJSON and FuzzAppendRecord);
// values of types this file does not know are handed to encoding/json.

// appendRecord appends the JSON encoding of r, normalized as documented
// on Record, to b. It does not append a newline.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	var err error
	b = append(b, `{"type":`...)
	b = appendString(b, string(r.Type))
	b = append(b, `,"id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"sender":`...)
	b = appendString(b, r.Sender)
	b = append(b, `,"recipient":`...)
	if len(r.Recipient) == 1 {
		b = appendString(b, r.Recipient[0])
	} else {
		b = appendStrings(b, r.Recipient)
	}
	b = append(b, `,"queue":`...)
	b = appendString(b, r.Queue)
	b = append(b, `,"site":`...)
	b = appendString(b, r.Site)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, r.Size, 10)

	b = append(b, `,"response":{"code":`...)
	b = strconv.AppendInt(b, int64(r.Response.Code), 10)
	b = append(b, `,"enhanced_code":`...)
	if ec := r.Response.EnhancedCode; ec == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"class":`...)
		b = strconv.AppendInt(b, int64(ec.Class), 10)
		b = append(b, `,"subject":`...)
		b = strconv.AppendInt(b, int64(ec.Subject), 10)
		b = append(b, `,"detail":`...)
		b = strconv.AppendInt(b, int64(ec.Detail), 10)
		b = append(b, '}')
	}
	b = append(b, `,"content":`...)
	b = appendString(b, singleLine(r.Response.Content))
	b = append(b, `,"command":`...)
	b = appendStringPtr(b, r.Response.Command)
	b = append(b, '}')

	b = append(b, `,"peer_address":`...)
	if pa := r.PeerAddress; pa == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"name":`...)
		b = appendString(b, pa.Name)
		b = append(b, `,"addr":`...)
		b = appendString(b, pa.Addr)
		if pa.IsSecure {
			b = append(b, `,"is_secure":true`...)
		}
		b = append(b, '}')
	}
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, r.Timestamp, 10)
	b = append(b, `,"event_time":`...)
	b = appendString(b, r.EventTime)
	b = append(b, `,"created":`...)
	b = strconv.AppendInt(b, r.Created, 10)
	b = append(b, `,"created_time":`...)
	b = appendString(b, r.CreatedTime)
	b = append(b, `,"num_attempts":`...)
	b = strconv.AppendInt(b, int64(r.NumAttempts), 10)
	b = append(b, `,"bounce_classification":`...)
	if r.BounceClassification == "" {
		b = appendString(b, Uncategorized)
	} else {
		b = appendString(b, r.BounceClassification)
	}
	b = append(b, `,"egress_pool":`...)
	b = appendStringPtr(b, r.EgressPool)
	b = append(b, `,"egress_source":`...)
	b = appendStringPtr(b, r.EgressSource)
	b = append(b, `,"source_address":`...)
	if sa := r.SourceAddress; sa == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"address":`...)
		b = appendString(b, sa.Address)
		if sa.Server != "" {
			b = append(b, `,"server":`...)
			b = appendString(b, sa.Server)
		}
		if sa.Protocol != "" {
			b = append(b, `,"protocol":`...)
			b = appendString(b, sa.Protocol)
		}
		b = append(b, '}')
	}
	b = append(b, `,"feedback_report":`...)
	if len(r.FeedbackReport) == 0 {
		b = append(b, "null"...)
	} else if b, err = appendRaw(b, r.FeedbackReport); err != nil {
		return nil, fmt.Errorf("feedback_report: %w", err)
	}
	b = append(b, `,"meta":`...)
	if b, err = appendMap(b, r.Meta); err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	b = append(b, `,"headers":`...)
	if b, err = appendMap(b, r.Headers); err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	b = append(b, `,"delivery_protocol":`...)
	b = appendStringPtr(b, r.DeliveryProtocol)
	b = append(b, `,"reception_protocol":`...)
	b = appendStringPtr(b, r.ReceptionProtocol)
	b = append(b, `,"nodeid":`...)
	b = appendString(b, r.NodeID)
	if r.TLSCipher != "" {
		b = append(b, `,"tls_cipher":`...)
		b = appendString(b, r.TLSCipher)
	}
	if r.TLSProtocolVersion != "" {
		b = append(b, `,"tls_protocol_version":`...)
		b = appendString(b, r.TLSProtocolVersion)
	}
	if len(r.TLSPeerSubjectName) > 0 {
		b = append(b, `,"tls_peer_subject_name":`...)
		b = appendStrings(b, r.TLSPeerSubjectName)
	}
	if r.ProviderName != "" {
		b = append(b, `,"provider_name":`...)
		b = appendString(b, r.ProviderName)
	}
	if r.SessionID != "" {
		b = append(b, `,"session_id":`...)
		b = appendString(b, r.SessionID)
	}
	return append(b, '}'), nil
}

func appendStringPtr(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendString(b, *s)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendMap writes m with sorted keys, nil as {}.
func appendMap(b []byte, m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return append(b, "{}"...), nil
	}
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		if b, err = appendValue(b, m[k]); err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
	}
	return append(b, '}'), nil
}

// appendValue writes the JSON form of a value decoded from or destined
// for JSON; other types go through encoding/json.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case float64:
		return appendFloat(b, v, 64)
	case float32:
		return appendFloat(b, float64(v), 32)
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case []string:
		if v == nil {
			return append(b, "null"...), nil
		}
		return appendStrings(b, v), nil
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		var err error
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		if v == nil {
			return append(b, "null"...), nil
		}
		return appendMap(b, v)
	default:
		return appendFallback(b, v)
	}
}

// appendFloat formats like encoding/json (ES6 number formatting).
func appendFloat(b []byte, f float64, bits int) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("unsupported value %v", f)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendRaw appends compacted, validated JSON.
func appendRaw(b []byte, raw []byte) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// appendFallback encodes v with encoding/json, without HTML escaping.
func appendFallback(b []byte, v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...), nil
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping off:
// ", \ and control characters escaped, invalid UTF-8 replaced by U+FFFD,
// U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
