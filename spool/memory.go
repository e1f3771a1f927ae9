package spool

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
)

// Memory is a [Spool] that keeps values in RAM. Nothing survives a restart,
// so it suits tests and deployments that accept losing queued mail when the
// process stops. It is safe for concurrent use.
type Memory struct {
	mu     sync.RWMutex
	m      map[ID][]byte
	closed bool
}

var _ Spool = (*Memory)(nil)

// NewMemory returns an empty in-memory spool.
func NewMemory() *Memory {
	return &Memory{m: make(map[ID][]byte)}
}

// Store implements [Spool.Store]. It copies data, so the caller may reuse
// the buffer as soon as Store returns.
func (s *Memory) Store(ctx context.Context, id ID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: store %s: %w", id, err)
	}
	v := bytes.Clone(data)
	if v == nil {
		v = []byte{} // keep "stored empty" distinct from "absent"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("spool: store %s: %w", id, ErrClosed)
	}
	s.m[id] = v
	return nil
}

// Load implements [Spool.Load]. The returned slice is a copy.
func (s *Memory) Load(ctx context.Context, id ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("spool: load %s: %w", id, ErrClosed)
	}
	v, ok := s.m[id]
	if !ok {
		return nil, fmt.Errorf("spool: load %s: %w", id, ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// Remove implements [Spool.Remove].
func (s *Memory) Remove(ctx context.Context, id ID) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("spool: remove %s: %w", id, ErrClosed)
	}
	delete(s.m, id)
	return nil
}

// Enumerate implements [Spool.Enumerate]. It works on a snapshot of the IDs
// taken at the start and calls fn without holding any lock, so fn may call
// Store and Remove; a value removed before its turn is skipped, and values
// stored during enumeration are not visited.
func (s *Memory) Enumerate(ctx context.Context, fn func(id ID, data []byte) error) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("spool: enumerate: %w", ErrClosed)
	}
	ids := make([]ID, 0, len(s.m))
	for id := range s.m {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })

	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("spool: enumerate: %w", err)
		}
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			return fmt.Errorf("spool: enumerate: %w", ErrClosed)
		}
		v, ok := s.m[id]
		s.mu.RUnlock()
		if !ok {
			continue
		}
		// v is never modified in place (Store replaces the slice), so
		// cloning outside the lock is safe.
		if err := fn(id, bytes.Clone(v)); err != nil {
			return err
		}
	}
	return nil
}

// EnumerateIDs implements [IDEnumerator] like Enumerate, without values.
func (s *Memory) EnumerateIDs(ctx context.Context, fn func(id ID) error) error {
	return s.Enumerate(ctx, func(id ID, _ []byte) error { return fn(id) })
}

// Close implements [Spool.Close]. It discards every value. A second call
// returns ErrClosed.
func (s *Memory) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.m = nil
	return nil
}
