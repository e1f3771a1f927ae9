package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/mtakit/mtakit/spool"
)

// FileSpool keeps each value in a file named after its ID in one
// directory. A Store writes a temporary file, syncs it, renames it into
// place and syncs the directory, so a value is on disk when Store returns
// (the spool.Spool contract) and a crash never leaves half a value under
// an ID. Simple and slow: one fsync pair per message, no group commit.
type FileSpool struct {
	dir string

	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup // calls in progress, for Close
}

var _ spool.Spool = (*FileSpool)(nil)

// OpenFileSpool opens (creating if needed) a spool in dir and removes
// temporary files a crash left behind.
func OpenFileSpool(dir string) (*FileSpool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filespool: open %s: %w", dir, err)
	}
	tmps, err := filepath.Glob(filepath.Join(dir, "*.tmp"))
	if err != nil {
		return nil, fmt.Errorf("filespool: open %s: %w", dir, err)
	}
	for _, t := range tmps {
		os.Remove(t)
	}
	return &FileSpool{dir: dir}, nil
}

// enter registers a call; it fails once Close has begun.
func (s *FileSpool) enter(ctx context.Context, op string, id spool.ID) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filespool: %s %s: %w", op, id, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("filespool: %s %s: %w", op, id, spool.ErrClosed)
	}
	s.wg.Add(1)
	return nil
}

func (s *FileSpool) path(id spool.ID) string { return filepath.Join(s.dir, id.String()) }

// Store implements spool.Spool: durable when it returns nil.
func (s *FileSpool) Store(ctx context.Context, id spool.ID, data []byte) error {
	if err := s.enter(ctx, "store", id); err != nil {
		return err
	}
	defer s.wg.Done()
	if err := s.store(id, data); err != nil {
		return fmt.Errorf("filespool: store %s: %w", id, err)
	}
	return nil
}

func (s *FileSpool) store(id spool.ID, data []byte) error {
	f, err := os.CreateTemp(s.dir, id.String()+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path(id))
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync() // the rename is durable only once the directory is synced
}

// Load implements spool.Spool.
func (s *FileSpool) Load(ctx context.Context, id spool.ID) ([]byte, error) {
	if err := s.enter(ctx, "load", id); err != nil {
		return nil, err
	}
	defer s.wg.Done()
	b, err := os.ReadFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("filespool: load %s: %w", id, spool.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("filespool: load %s: %w", id, err)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// Remove implements spool.Spool. It does not sync: a removal lost in a
// crash only means the message is retried.
func (s *FileSpool) Remove(ctx context.Context, id spool.ID) error {
	if err := s.enter(ctx, "remove", id); err != nil {
		return err
	}
	defer s.wg.Done()
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filespool: remove %s: %w", id, err)
	}
	return nil
}

// Enumerate implements spool.Spool: IDs in ascending order, each value
// read when its turn comes (so fn sees its own Store and Remove calls).
func (s *FileSpool) Enumerate(ctx context.Context, fn func(id spool.ID, data []byte) error) error {
	if err := s.enter(ctx, "enumerate", spool.ID{}); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.dir)
	s.wg.Done()
	if err != nil {
		return fmt.Errorf("filespool: enumerate: %w", err)
	}
	var ids []spool.ID
	for _, e := range entries {
		if id, err := spool.ParseID(e.Name()); err == nil {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b spool.ID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range ids {
		data, err := s.Load(ctx, id)
		if errors.Is(err, spool.ErrNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			return fmt.Errorf("filespool: enumerate: %w", err)
		}
		if err := fn(id, data); err != nil {
			return err
		}
	}
	return nil
}

// Close implements spool.Spool: it waits for calls in progress; later
// calls fail with spool.ErrClosed.
func (s *FileSpool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return spool.ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
