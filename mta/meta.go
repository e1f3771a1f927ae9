package mta

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mtakit/mtakit/spool"
)

// storedMeta is what the meta spool holds for a message: the envelope, the
// metadata and the scheduling state, decoded. The spool holds it in the
// binary form below (version 2); version 1, JSON, is still read, so a
// spool written by an older mtakit recovers.
type storedMeta struct {
	Version    int            `json:"v"`
	Sender     string         `json:"sender"`
	Recipients []string       `json:"recipients"`
	Meta       map[string]any `json:"meta,omitempty"`
	// Headers holds the values of Options.LogHeaders captured at
	// reception, so records of later events can carry them without
	// loading the message.
	Headers     map[string]any `json:"headers,omitempty"`
	Due         time.Time      `json:"due,omitzero"`
	NumAttempts int            `json:"num_attempts,omitempty"`
	// Body, when set, names a data-spool record holding the content this
	// message shares with the other recipients of its transaction; the
	// message's own data record then holds only the header fields
	// prepended for it (trace, signature). Zero: the own data record is
	// the complete message.
	Body spool.ID `json:"body,omitzero"`
}

// Meta versions: the first byte of a version 2 entry, the "v" field of a
// version 1 (JSON) one.
const (
	metaVersionJSON   = 1
	metaVersionBinary = 2
)

// ErrMetaVersion is wrapped by decodeMeta for an entry of a version this
// build does not read (written by a newer mtakit, or not meta at all).
var ErrMetaVersion = errors.New("unsupported meta version")

// The binary form (version 2), little endian, lengths and counts as
// unsigned varints:
//
//	version   byte 2
//	attempts  uvarint
//	due       byte 0 (zero time), or byte 1, varint seconds and uvarint
//	          nanoseconds since the Unix epoch
//	packed:
//	  flags   byte; bit 0: a body ID follows
//	  body    16 bytes, with flag bit 0
//	  sender  string
//	  rcpts   count, then each a string
//	  meta    count, then each a key and a value
//	  headers count, then each a key and a value
//
// A string is its length and bytes, kept exactly (JSON replaced invalid
// UTF-8). A key is a uvarint: 0 and a string, or i > 0 for knownKeys[i-1].
// A value is a kind byte and its payload: kindNil, kindFalse, kindTrue (no
// payload), kindString (a string), kindFloat (8 bytes IEEE 754), kindInt
// (zigzag varint) or kindJSON (a string of JSON text). Decoding gives what
// JSON decoding gave: numbers of any Go kind come back as float64, values
// other than nil, bool, string and numbers (nested tables, times, types of
// the embedding program) go through encoding/json.
//
// The packed part is what a queued message keeps in memory: decoding a
// value on demand costs less than a decoded map costs in memory for every
// queued message (see BENCHMARKS.md), and it holds no pointers for the
// garbage collector to trace. Due and attempts live in queuedMessage
// fields, which change without a store (holds, rate limits).
const (
	kindNil byte = iota
	kindFalse
	kindTrue
	kindString
	kindFloat
	kindInt
	kindJSON
)

const packedHasBody = 1 << 0

// knownKeys are meta keys and log header names written as a one-byte
// code. The codes are stored: append only, never reorder or remove.
var knownKeys = [...]string{
	"queue", "tenant", "campaign", "routing_domain", "reception_protocol",
	"received_via", "received_from", "hostname", "ehlo_domain", "tls_cipher",
	"tls_protocol_version", "log_oob", "log_arf", "extra",
	"Subject", "Message-ID", "From", "To", "Date",
}

var knownKeyCode = func() map[string]uint64 {
	m := make(map[string]uint64, len(knownKeys))
	for i, k := range knownKeys {
		m[k] = uint64(i + 1)
	}
	return m
}()

// dueSecLimit bounds the seconds of a due time (about 1.5e11 years), so
// that time.Unix never overflows and every due time round-trips.
const dueSecLimit = 1 << 62

// maxSafeInt is 2^53: integers below it in magnitude are exact in a float64.
const maxSafeInt = 1 << 53

// encodeMeta returns the version 2 form of m.
func encodeMeta(m *storedMeta) ([]byte, error) {
	b := make([]byte, 0, 256)
	b = appendSched(b, m.Due, m.NumAttempts)
	return appendPacked(b, m)
}

// appendSched appends the version byte and the scheduling state.
func appendSched(b []byte, due time.Time, attempts int) []byte {
	b = append(b, metaVersionBinary)
	b = binary.AppendUvarint(b, uint64(clampAttempts(attempts)))
	if due.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, min(max(due.Unix(), -dueSecLimit), dueSecLimit))
	return binary.AppendUvarint(b, uint64(due.Nanosecond()))
}

// appendPacked appends the packed part of m (everything but the scheduling
// state). Map entries are written in key order, so equal metas encode
// equally.
func appendPacked(b []byte, m *storedMeta) ([]byte, error) {
	var flags byte
	if !m.Body.IsZero() {
		flags |= packedHasBody
	}
	b = append(b, flags)
	if !m.Body.IsZero() {
		b = append(b, m.Body[:]...)
	}
	b = appendString(b, m.Sender)
	b = binary.AppendUvarint(b, uint64(len(m.Recipients)))
	for _, r := range m.Recipients {
		b = appendString(b, r)
	}
	var err error
	if b, err = appendMap(b, m.Meta); err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	if b, err = appendMap(b, m.Headers); err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendMap(b []byte, m map[string]any) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(m)))
	if len(m) == 0 {
		return b, nil
	}
	var err error
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if c, ok := knownKeyCode[k]; ok {
			b = binary.AppendUvarint(b, c)
		} else {
			b = appendString(append(b, 0), k)
		}
		if b, err = appendValue(b, m[k]); err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
	}
	return b, nil
}

// appendValue appends v so that decoding yields what JSON decoding of
// json.Marshal(v) yields.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, kindNil), nil
	case bool:
		if v {
			return append(b, kindTrue), nil
		}
		return append(b, kindFalse), nil
	case string:
		return appendString(append(b, kindString), v), nil
	case float64:
		return appendFloat(b, v)
	case int:
		return appendInt(b, int64(v)), nil
	case int64:
		return appendInt(b, v), nil
	case int32:
		return appendInt(b, int64(v)), nil
	case int16:
		return appendInt(b, int64(v)), nil
	case int8:
		return appendInt(b, int64(v)), nil
	case uint:
		return appendUint(b, uint64(v))
	case uint64:
		return appendUint(b, v)
	case uint32:
		return appendInt(b, int64(v)), nil
	case uint16:
		return appendInt(b, int64(v)), nil
	case uint8:
		return appendInt(b, int64(v)), nil
	}
	// float32, nested tables, times and other types: as JSON, which
	// also refuses what it cannot encode, as before.
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return appendString(append(b, kindJSON), string(j)), nil
}

func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("unsupported number %v (JSON has no NaN or infinity)", f)
	}
	// Integral values, the common case, take a varint; -0 keeps its sign.
	if f == math.Trunc(f) && math.Abs(f) < maxSafeInt && !(f == 0 && math.Signbit(f)) {
		return appendInt(b, int64(f)), nil
	}
	b = append(b, kindFloat)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f)), nil
}

func appendInt(b []byte, i int64) []byte {
	return binary.AppendVarint(append(b, kindInt), i)
}

func appendUint(b []byte, u uint64) ([]byte, error) {
	if u <= math.MaxInt64 {
		return appendInt(b, int64(u)), nil
	}
	// Rounded as JSON decoding rounds the decimal digits.
	return appendFloat(b, float64(u))
}

// decodeMeta decodes a meta spool entry of either version.
func decodeMeta(id spool.ID, b []byte) (*storedMeta, error) {
	if len(b) > 0 && b[0] == metaVersionBinary {
		m, err := decodeBinary(b)
		if err != nil {
			return nil, fmt.Errorf("mta: decode meta %s: %w", id, err)
		}
		return m, nil
	}
	if !looksJSON(b) {
		if len(b) == 0 {
			return nil, fmt.Errorf("mta: decode meta %s: empty entry", id)
		}
		return nil, fmt.Errorf("mta: decode meta %s: %w: first byte 0x%02x", id, ErrMetaVersion, b[0])
	}
	var m storedMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("mta: decode meta %s: %w", id, err)
	}
	if m.Version != metaVersionJSON {
		return nil, fmt.Errorf("mta: decode meta %s: %w %d", id, ErrMetaVersion, m.Version)
	}
	return &m, nil
}

// looksJSON reports whether b starts as a JSON object may (version 1).
func looksJSON(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

func decodeBinary(b []byte) (*storedMeta, error) {
	due, attempts, packed, err := splitSched(b)
	if err != nil {
		return nil, err
	}
	if err := validatePacked(packed); err != nil {
		return nil, err
	}
	m := unpack(packed)
	m.Version, m.Due, m.NumAttempts = metaVersionBinary, due, attempts
	return m, nil
}

// splitSched reads the version byte and the scheduling state of a version
// 2 entry and returns the packed rest.
func splitSched(b []byte) (due time.Time, attempts int, packed []byte, err error) {
	r := metaReader{b: b}
	if v := r.byte(); v != metaVersionBinary && r.err == nil {
		return time.Time{}, 0, nil, fmt.Errorf("%w: first byte 0x%02x", ErrMetaVersion, v)
	}
	a := r.uvarint()
	if a > math.MaxInt32 {
		r.fail("attempt count %d out of range", a)
	}
	switch tag := r.byte(); tag {
	case 0:
	case 1:
		sec := r.varint()
		nsec := r.uvarint()
		if nsec >= 1e9 {
			r.fail("due nanoseconds %d out of range", nsec)
		}
		if sec < -dueSecLimit || sec > dueSecLimit {
			r.fail("due %d s out of range", sec)
		}
		due = time.Unix(sec, int64(nsec))
	default:
		r.fail("due tag %d", tag)
	}
	if r.err != nil {
		return time.Time{}, 0, nil, r.err
	}
	return due, int(a), r.b, nil
}

// metaReader reads the binary form; the first error sticks and makes
// every later read return zero values.
type metaReader struct {
	b   []byte
	err error
}

func (r *metaReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("corrupt binary meta: "+format, args...)
	}
	r.b = nil
}

func (r *metaReader) byte() byte {
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *metaReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) take(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail("length %d beyond the end", n)
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// count reads an element count; every element takes at least min bytes,
// so a count the rest cannot hold is corrupt (and allocates nothing).
func (r *metaReader) count(min int) int {
	n := r.uvarint()
	if n > uint64(len(r.b)/min) {
		r.fail("count %d beyond the end", n)
		return 0
	}
	return int(n)
}

func (r *metaReader) bytes() []byte { return r.take(r.uvarint()) }

// key returns a known key's name, or the bytes of a literal one (isLit).
func (r *metaReader) key() (known string, lit []byte, isLit bool) {
	c := r.uvarint()
	switch {
	case r.err != nil:
		return "", nil, false
	case c == 0:
		return "", r.bytes(), true
	case c > uint64(len(knownKeys)):
		r.fail("unknown key code %d", c)
		return "", nil, false
	}
	return knownKeys[c-1], nil, false
}

// name returns the key read by key as a string.
func keyName(known string, lit []byte, isLit bool) string {
	if isLit {
		return string(lit)
	}
	return known
}

// rawValue returns a value's kind and payload without decoding it.
func (r *metaReader) rawValue() (kind byte, payload []byte) {
	kind = r.byte()
	switch kind {
	case kindNil, kindFalse, kindTrue:
		return kind, nil
	case kindString, kindJSON:
		return kind, r.bytes()
	case kindFloat:
		return kind, r.take(8)
	case kindInt:
		start := r.b
		r.varint()
		return kind, start[:len(start)-len(r.b)]
	}
	if r.err == nil {
		r.fail("unknown value kind %d", kind)
	}
	return 0, nil
}

// decodeValue turns a value read by rawValue into what JSON decoding
// gives. The payload has been validated (validatePacked).
func decodeValue(kind byte, p []byte) any {
	switch kind {
	case kindFalse:
		return false
	case kindTrue:
		return true
	case kindString:
		return string(p)
	case kindFloat:
		return math.Float64frombits(binary.LittleEndian.Uint64(p))
	case kindInt:
		i, _ := binary.Varint(p)
		return float64(i)
	case kindJSON:
		var v any
		if err := json.Unmarshal(p, &v); err != nil {
			panic(fmt.Sprintf("mta: internal: validated JSON meta value unreadable: %v", err))
		}
		return v
	}
	return nil
}

// validatePacked checks that p is a well-formed packed part, so that
// reading it later cannot fail.
func validatePacked(p []byte) error {
	_, err := scanPacked(p)
	return err
}

// queueFields are what a queue name is made of, as found in a packed part.
type queueFields struct {
	queue, campaign, tenant, routing []byte
	firstRcpt                        []byte
}

// scanPacked checks that p is a well-formed packed part and returns the
// parts of its queue name: one pass for what recovery needs.
func scanPacked(p []byte) (queueFields, error) {
	var qf queueFields
	r := metaReader{b: p}
	flags := r.byte()
	if flags&^packedHasBody != 0 {
		r.fail("unknown flags 0x%02x", flags)
	}
	if flags&packedHasBody != 0 {
		r.take(16)
	}
	r.bytes() // sender
	for i := range r.count(1) {
		if b := r.bytes(); i == 0 {
			qf.firstRcpt = b
		}
	}
	for section := range 2 { // meta, headers
		for range r.count(2) {
			known, lit, isLit := r.key()
			kind, payload := r.rawValue()
			switch {
			case r.err != nil:
				return qf, r.err
			case kind == kindJSON && !json.Valid(payload):
				r.fail("invalid JSON value")
			case kind == kindFloat:
				if f := math.Float64frombits(binary.LittleEndian.Uint64(payload)); math.IsNaN(f) || math.IsInf(f, 0) {
					r.fail("number %v", f)
				}
			}
			if r.err != nil {
				return qf, r.err
			}
			if section == 0 {
				qf.set(known, lit, isLit, kind, payload)
			}
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d bytes after the end", len(r.b))
	}
	return qf, r.err
}

// set notes a meta entry if it is part of the queue name. The last entry
// of a key counts; a value that is not a string counts as "", one that
// JSON made a string of (a time, say) as that string.
func (qf *queueFields) set(known string, lit []byte, isLit bool, kind byte, payload []byte) {
	name := known
	if isLit {
		switch string(lit) {
		case MetaQueue, MetaCampaign, MetaTenant, MetaRoutingDomain:
			name = string(lit)
		default:
			return
		}
	}
	var dst *[]byte
	switch name {
	case MetaQueue:
		dst = &qf.queue
	case MetaCampaign:
		dst = &qf.campaign
	case MetaTenant:
		dst = &qf.tenant
	case MetaRoutingDomain:
		dst = &qf.routing
	default:
		return
	}
	*dst = nil
	switch kind {
	case kindString:
		*dst = payload
	case kindJSON:
		if s, ok := decodeValue(kind, payload).(string); ok {
			*dst = []byte(s)
		}
	}
}

// appendName appends the queue name, as Message.QueueName makes it.
func (qf *queueFields) appendName(b []byte) []byte {
	if len(qf.queue) > 0 {
		return append(b, qf.queue...)
	}
	switch {
	case len(qf.campaign) > 0:
		b = append(append(append(append(b, qf.campaign...), ':'), qf.tenant...), '@')
	case len(qf.tenant) > 0:
		b = append(append(b, qf.tenant...), '@')
	}
	if i := bytes.LastIndexByte(qf.firstRcpt, '@'); i >= 0 {
		b = appendLower(b, qf.firstRcpt[i+1:])
	}
	if len(qf.routing) > 0 {
		b = append(append(b, '!'), qf.routing...)
	}
	return b
}

// appendLower appends strings.ToLower(s).
func appendLower(b, s []byte) []byte {
	for _, c := range s {
		if c >= utf8.RuneSelf {
			return append(b, strings.ToLower(string(s))...)
		}
	}
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// unpack decodes a validated packed part.
func unpack(p []byte) *storedMeta {
	r := metaReader{b: p}
	m := &storedMeta{}
	if r.byte()&packedHasBody != 0 {
		m.Body = spool.ID(r.take(16))
	}
	m.Sender = string(r.bytes())
	if n := r.count(1); n > 0 {
		m.Recipients = make([]string, n)
		for i := range m.Recipients {
			m.Recipients[i] = string(r.bytes())
		}
	}
	m.Meta = readMap(&r)
	m.Headers = readMap(&r)
	return m
}

func readMap(r *metaReader) map[string]any {
	n := r.count(2)
	if n == 0 {
		return nil
	}
	out := make(map[string]any, n)
	for range n {
		out[keyName(r.key())] = decodeValue(r.rawValue())
	}
	return out
}

// skipToMeta returns a reader positioned at the meta count of a validated
// packed part, and the sender and recipient count on the way.
func skipToMeta(p []byte) (r metaReader, sender []byte, firstRcpt []byte, nrcpt int) {
	r = metaReader{b: p}
	if r.byte()&packedHasBody != 0 {
		r.take(16)
	}
	sender = r.bytes()
	nrcpt = r.count(1)
	for i := range nrcpt {
		b := r.bytes()
		if i == 0 {
			firstRcpt = b
		}
	}
	return r, sender, firstRcpt, nrcpt
}

// lookupPacked returns the meta value for key in a validated packed part;
// like a decoded map, the last entry of a key counts.
func lookupPacked(p []byte, key string) (any, bool) {
	kind, payload, found := lookupRaw(p, key)
	if !found {
		return nil, false
	}
	return decodeValue(kind, payload), true
}

// lookupRaw is lookupPacked without decoding the value.
func lookupRaw(p []byte, key string) (kind byte, payload []byte, found bool) {
	r, _, _, _ := skipToMeta(p)
	for range r.count(2) {
		known, lit, isLit := r.key()
		k, v := r.rawValue()
		if isLit && string(lit) == key || !isLit && known == key {
			kind, payload, found = k, v, true
		}
	}
	return kind, payload, found
}

// packedQueueName is Message.QueueName for a validated packed part.
func packedQueueName(p []byte) string {
	qf, _ := scanPacked(p)
	return string(qf.appendName(nil))
}
