package mta

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"time"
	"unique"

	"github.com/mtakit/mtakit/spool"
)

// This file holds the accessors of queuedMessage: its envelope, metadata
// and log headers are kept packed (see meta.go) and decoded when asked
// for. The packed form is validated when the message is made, so reading
// it cannot fail; a failure would be a bug in this package, and panics
// rather than deliver to, or forget, the wrong recipients.

// newQueuedMessage makes the queued message for meta (due time and
// attempts included), as the spool holds it.
func newQueuedMessage(id spool.ID, sm *storedMeta) (*queuedMessage, error) {
	packed, err := pack(sm)
	if err != nil {
		return nil, fmt.Errorf("mta: encode meta %s: %w", id, err)
	}
	m := &queuedMessage{id: id, packed: packed, attempts: clampAttempts(sm.NumAttempts)}
	m.setDue(sm.Due)
	m.queue = internQueue(packedQueueName(packed))
	return m, nil
}

// queuedFromSpool makes the queued message for a meta spool entry of
// either version, keeping b (which the caller gives up) when it is
// version 2. names, if not nil, speeds up interning queue names; it is
// not safe for concurrent use.
func queuedFromSpool(id spool.ID, b []byte, names *queueNames) (*queuedMessage, error) {
	if len(b) == 0 || b[0] != metaVersionBinary {
		sm, err := decodeMeta(id, b)
		if err != nil {
			return nil, err
		}
		return newQueuedMessage(id, sm)
	}
	due, attempts, packed, err := splitSched(b)
	var qf queueFields
	if err == nil {
		qf, err = scanPacked(packed)
	}
	if err != nil {
		return nil, fmt.Errorf("mta: decode meta %s: %w", id, err)
	}
	m := &queuedMessage{id: id, packed: packed, attempts: clampAttempts(attempts)}
	m.setDue(due)
	m.queue = names.intern(&qf)
	return m, nil
}

// queueNames interns queue names during recovery without making a string
// for each message: most messages share their queue.
type queueNames struct {
	known map[string]string
	buf   []byte
}

func (n *queueNames) intern(qf *queueFields) string {
	if n == nil {
		return internQueue(string(qf.appendName(nil)))
	}
	n.buf = qf.appendName(n.buf[:0])
	if q, ok := n.known[string(n.buf)]; ok {
		return q
	}
	q := internQueue(string(n.buf))
	if n.known == nil {
		n.known = make(map[string]string)
	}
	if len(n.known) < 4096 { // bounded: a queue per message gains nothing here
		n.known[q] = q
	}
	return q
}

// pack returns the packed part of sm in a slice of its own size: it is
// kept for as long as the message is queued.
func pack(sm *storedMeta) ([]byte, error) {
	p, err := appendPacked(make([]byte, 0, 512), sm)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(p), nil
}

// internQueue returns the canonical copy of a queue name, so that the
// messages of one queue share one string.
func internQueue(q string) string { return unique.Make(q).Value() }

func clampAttempts(n int) int32 { return int32(min(max(n, 0), math.MaxInt32)) }

// encode returns the meta spool entry for m: its scheduling state and
// packed part.
func (m *queuedMessage) encode() []byte {
	b := make([]byte, 0, 24+len(m.packed))
	b = appendSched(b, m.dueTime(), int(m.attempts))
	return append(b, m.packed...)
}

// dueTime returns when m is due; the zero time means at once.
func (m *queuedMessage) dueTime() time.Time {
	if m.due == 0 {
		return time.Time{}
	}
	return time.Unix(0, m.due)
}

// setDue sets when m is due. Times beyond what Unix nanoseconds hold
// (years before 1678 or after 2262) are clamped.
func (m *queuedMessage) setDue(t time.Time) {
	switch {
	case t.IsZero():
		m.due = 0
	case t.Before(time.Unix(0, math.MinInt64+1)):
		m.due = math.MinInt64 + 1
	case t.After(time.Unix(0, math.MaxInt64)):
		m.due = math.MaxInt64
	default:
		m.due = t.UnixNano()
		if m.due == 0 { // the epoch itself; 0 means "at once"
			m.due = 1
		}
	}
}

func (m *queuedMessage) numAttempts() int { return int(m.attempts) }

// sender returns the envelope sender.
func (m *queuedMessage) sender() string {
	r, s, _, _ := skipToMeta(m.packed)
	m.mustBeValid(r.err)
	return string(s)
}

// recipients returns the recipients still to deliver; the slice is the
// caller's.
func (m *queuedMessage) recipients() []string {
	r := metaReader{b: m.packed}
	if r.byte()&packedHasBody != 0 {
		r.take(16)
	}
	r.bytes() // sender
	out := make([]string, r.count(1))
	for i := range out {
		out[i] = string(r.bytes())
	}
	m.mustBeValid(r.err)
	return out
}

// bodyID returns the shared body record the message refers to (see
// storedMeta.Body); zero when its own data record is complete.
func (m *queuedMessage) bodyID() spool.ID {
	if len(m.packed) > 16 && m.packed[0]&packedHasBody != 0 {
		return spool.ID(m.packed[1:17])
	}
	return spool.ID{}
}

// metaValue returns the meta value for key, decoded as from JSON.
func (m *queuedMessage) metaValue(key string) (any, bool) { return lookupPacked(m.packed, key) }

// metaString returns the meta value for key if it is a string.
func (m *queuedMessage) metaString(key string) string {
	switch kind, payload, _ := lookupRaw(m.packed, key); kind {
	case kindString:
		return string(payload)
	case kindJSON: // a value that JSON made a string of (a time, say)
		s, _ := decodeValue(kind, payload).(string)
		return s
	}
	return ""
}

// pickMeta returns the meta values of keys that are set, for a log record.
func (m *queuedMessage) pickMeta(keys []string) map[string]any {
	out := make(map[string]any, len(keys))
	if len(keys) == 0 {
		return out
	}
	r, _, _, _ := skipToMeta(m.packed)
	for range r.count(2) {
		known, lit, isLit := r.key()
		kind, payload := r.rawValue()
		for _, k := range keys {
			if isLit && string(lit) == k || !isLit && known == k {
				out[k] = decodeValue(kind, payload)
			}
		}
	}
	m.mustBeValid(r.err)
	return out
}

// stored returns m decoded: envelope, meta, headers and scheduling state.
func (m *queuedMessage) stored() *storedMeta {
	sm := unpack(m.packed)
	sm.Version, sm.Due, sm.NumAttempts = metaVersionBinary, m.dueTime(), int(m.attempts)
	return sm
}

// headers returns the log header values captured at reception; nil when
// there are none.
func (m *queuedMessage) headers() map[string]any {
	r, _, _, _ := skipToMeta(m.packed)
	for range r.count(2) { // skip the meta
		r.key()
		r.rawValue()
	}
	h := readMap(&r)
	m.mustBeValid(r.err)
	return h
}

// setRecipients replaces the recipients still to deliver. The rest of
// the packed form is copied as it is.
func (m *queuedMessage) setRecipients(rcpts []string) {
	r := metaReader{b: m.packed}
	if r.byte()&packedHasBody != 0 {
		r.take(16)
	}
	r.bytes() // sender
	head := m.packed[:len(m.packed)-len(r.b)]
	for range r.count(1) {
		r.bytes()
	}
	m.mustBeValid(r.err)
	tail := r.b
	size := len(head) + len(tail) + binary.MaxVarintLen64
	for _, rc := range rcpts {
		size += binary.MaxVarintLen64 + len(rc)
	}
	p := make([]byte, 0, size)
	p = append(p, head...)
	p = binary.AppendUvarint(p, uint64(len(rcpts)))
	for _, rc := range rcpts {
		p = appendString(p, rc)
	}
	m.packed = bytes.Clone(append(p, tail...))
}

// mergeMeta sets the meta values in set (as maps.Copy would).
func (m *queuedMessage) mergeMeta(set map[string]any) error {
	sm := unpack(m.packed)
	if sm.Meta == nil {
		sm.Meta = make(map[string]any, len(set))
	}
	maps.Copy(sm.Meta, set)
	return m.repack(sm)
}

func (m *queuedMessage) repack(sm *storedMeta) error {
	p, err := pack(sm)
	if err != nil {
		return fmt.Errorf("mta: encode meta %s: %w", m.id, err)
	}
	m.packed = p
	return nil
}

func (m *queuedMessage) mustBeValid(err error) {
	if err != nil {
		panic(fmt.Sprintf("mta: internal: packed meta of queued message %s unreadable: %v", m.id, err))
	}
}
