package mta

import (
	"context"
	"fmt"
	"sync"

	"github.com/mtakit/mtakit/spool"
)

// Shared bodies.
//
// A transaction with several recipients becomes several messages
// (KumoMTA's BifurcateAlways), each with its own queue, retries and log
// records. Their content differs only in the header fields prepended for
// each (Received, X-KumoRef, DKIM-Signature), so the received content is
// stored once, in a data-spool record of its own ID, and each message's
// data record holds only its prepended fields; its meta names the body
// (storedMeta.Body). A 10-recipient message is then written to disk once,
// not ten times. A message whose policy hook rewrites the content keeps a
// complete data record of its own.
//
// A body is removed when the last message that refers to it is finished.
// The counts live in memory and are rebuilt from the metas at recovery; a
// crash between removing the last meta and removing the body leaves an
// unreferenced body, which the orphan reclaimer removes at the next start.

// bodyRefs counts, for each shared body, the live messages that refer to it.
type bodyRefs struct {
	mu sync.Mutex
	n  map[spool.ID]int
}

func newBodyRefs() *bodyRefs { return &bodyRefs{n: make(map[spool.ID]int)} }

// add records k more messages referring to body.
func (b *bodyRefs) add(body spool.ID, k int) {
	b.mu.Lock()
	b.n[body] += k
	b.mu.Unlock()
}

// release drops one reference and reports whether it was the last.
func (b *bodyRefs) release(body spool.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n[body]--
	if b.n[body] > 0 {
		return false
	}
	delete(b.n, body)
	return true
}

// referenced reports whether a live message refers to body.
func (b *bodyRefs) referenced(body spool.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n[body] > 0
}

// loadData returns the complete content of message id: its data record,
// followed by the shared body record body, if not zero. An error wraps
// spool.ErrNotFound when either record is missing.
func (s *Server) loadData(ctx context.Context, id, body spool.ID) ([]byte, error) {
	own, err := s.opts.DataSpool.Load(ctx, id)
	if err != nil || body.IsZero() {
		return own, err
	}
	shared, err := s.opts.DataSpool.Load(ctx, body)
	if err != nil {
		return nil, fmt.Errorf("mta: load shared body %s of %s: %w", body, id, err)
	}
	return append(own, shared...), nil
}
