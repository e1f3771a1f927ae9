package logs

import (
	"errors"
	"sync"
	"testing"
)

// memSink records what it is given and fails when told to.
type memSink struct {
	mu       sync.Mutex
	ids      []string
	closed   int
	logErr   error
	closeErr error
}

func (m *memSink) Log(r *Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ids = append(m.ids, r.ID)
	return m.logErr
}

func (m *memSink) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed++
	return m.closeErr
}

func TestMulti(t *testing.T) {
	errA, errB := errors.New("a failed"), errors.New("b closing failed")
	a := &memSink{logErr: errA}
	b := &memSink{closeErr: errB}
	c := &memSink{}
	m := Multi(a, nil, b, c)

	if err := m.Log(&Record{ID: "1"}); !errors.Is(err, errA) {
		t.Errorf("Log = %v, want a's error", err)
	}
	if err := m.Log(&Record{ID: "2"}); !errors.Is(err, errA) {
		t.Errorf("Log = %v, want a's error", err)
	}
	for name, s := range map[string]*memSink{"a": a, "b": b, "c": c} {
		if len(s.ids) != 2 || s.ids[0] != "1" || s.ids[1] != "2" {
			t.Errorf("sink %s got %v, want [1 2] despite a's failure", name, s.ids)
		}
	}
	a.logErr = nil
	c.closeErr = errA
	err := m.Close()
	if !errors.Is(err, errA) || !errors.Is(err, errB) {
		t.Errorf("Close = %v, want b's and c's errors joined", err)
	}
	if a.closed != 1 || b.closed != 1 || c.closed != 1 {
		t.Errorf("closed counts %d %d %d, want 1 each", a.closed, b.closed, c.closed)
	}

	if err := Multi().Log(&Record{}); err != nil {
		t.Errorf("empty Multi Log = %v", err)
	}
	if err := Multi().Close(); err != nil {
		t.Errorf("empty Multi Close = %v", err)
	}
}

func TestMultiWithLocal(t *testing.T) {
	dir1, dir2 := t.TempDir(), t.TempDir()
	l1 := openLocal(t, LocalConfig{LogDir: dir1})
	l2 := openLocal(t, LocalConfig{LogDir: dir2, Uncompressed: true})
	m := Multi(l1, l2, Discard)
	for _, r := range makeRecords(20) {
		if err := m.Log(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{dir1, dir2} {
		if got, err := ReadDir(dir); err != nil || len(got) != 20 {
			t.Errorf("%s: %d records, %v; want 20", dir, len(got), err)
		}
	}
}

func TestDiscard(t *testing.T) {
	if err := Discard.Log(receptionRecord(1)); err != nil {
		t.Error(err)
	}
	if err := Discard.Close(); err != nil {
		t.Error(err)
	}
}
