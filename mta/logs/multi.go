package logs

import "errors"

// Multi returns a Sink that logs each record to every one of sinks, in
// order, and closes them all on Close. Errors are joined; one sink's
// failure does not stop the others. Nil sinks are ignored.
func Multi(sinks ...Sink) Sink {
	m := make(multi, 0, len(sinks))
	for _, s := range sinks {
		if s != nil {
			m = append(m, s)
		}
	}
	return m
}

type multi []Sink

func (m multi) Log(rec *Record) error {
	var errs []error
	for _, s := range m {
		if err := s.Log(rec); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Syncs implements Syncer: true if any of the sinks syncs t.
func (m multi) Syncs(t RecordType) bool {
	for _, s := range m {
		if Syncs(s, t) {
			return true
		}
	}
	return false
}

// Sync implements Syncer: it syncs every sink that implements it.
func (m multi) Sync(t RecordType) error {
	var errs []error
	for _, s := range m {
		if err := Sync(s, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m multi) Close() error {
	var errs []error
	for _, s := range m {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Discard is a Sink that accepts and drops every record.
var Discard Sink = discard{}

type discard struct{}

func (discard) Log(*Record) error { return nil }
func (discard) Close() error      { return nil }
