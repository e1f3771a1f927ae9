package logs

import "sync"

// Memory is a Sink that keeps every record in memory, for tests and
// tools that inspect what a server logged. It is safe for concurrent use;
// the zero value is ready.
type Memory struct {
	mu   sync.Mutex
	recs []Record
}

var _ Sink = (*Memory)(nil)

// Log implements Sink: it keeps a copy of rec.
func (m *Memory) Log(rec *Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, *rec)
	return nil
}

// Close implements Sink; the records stay readable.
func (m *Memory) Close() error { return nil }

// Records returns the records logged so far, in order.
func (m *Memory) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, len(m.recs))
	copy(out, m.recs)
	return out
}

// OfType returns the records of type t logged so far, in order.
func (m *Memory) OfType(t RecordType) []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for _, r := range m.recs {
		if r.Type == t {
			out = append(out, r)
		}
	}
	return out
}
