// Package spool defines the durable store in which mtakit keeps every
// accepted message until it is delivered, bounced or expired.
//
// A server uses two spools, as KumoMTA does: a "data" spool for message
// bodies and a "meta" spool for envelopes and scheduling state. Both are
// key/value stores keyed by [ID]. The contract that makes "nothing lost"
// possible is on [Spool.Store]: when it returns nil the value is on stable
// storage and survives a crash of the process or of the machine.
//
// Two implementations exist: package spool/badgerspool, backed by
// github.com/dgraph-io/badger/v4 and durable (in its own package, so that
// a program with its own spool does not link badger), and [Memory], which keeps
// everything in RAM for tests and for users who accept loss on restart.
// Users who write their own Spool can check it with package spooltest.
//
// Contract highlights beyond Store's durability: Store replaces any
// previous value, including one removed just before (Remove then Store
// makes the ID present again, also while an Enumerate runs); Remove need
// not be durable (a lost removal means a retry); Enumerate visits IDs in
// ascending order, and fn may call Store and Remove on the same spool. The
// badger implementation syncs every commit (SyncWrites), so an
// acknowledged store survives power loss if the disk honours flushes; a
// killed process alone cannot lose it either way.
package spool

import (
	"context"
	"errors"
	"sync"
)

// ErrNotFound is returned by Load when no value is stored under the ID.
var ErrNotFound = errors.New("spool: not found")

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("spool: closed")

// Spool is a durable key/value store for messages.
//
// Implementations must be safe for concurrent use. Values passed to Store and
// returned by Load and Enumerate are owned by the callee/caller respectively:
// Store may not retain data after it returns, and callers may modify what Load
// and Enumerate hand them. A call whose ctx is already done fails with an
// error wrapping ctx.Err() and changes nothing. Package spooltest checks all
// of this.
type Spool interface {
	// Store writes data under id, replacing any previous value. When Store
	// returns nil the value is durable: it survives a process crash and a
	// power loss. On error the message must be treated as not accepted;
	// whether data reached storage is unknown if the failure came late
	// (say, a failed fsync after the write), so a caller that must not
	// deliver it later should Remove id.
	Store(ctx context.Context, id ID, data []byte) error

	// Load returns the value stored under id, or an error wrapping
	// ErrNotFound.
	Load(ctx context.Context, id ID) ([]byte, error)

	// Remove deletes the value stored under id. Removing an absent ID is
	// not an error. Removal need not be durable before Remove returns: a
	// removal lost in a crash means a message is retried, never lost.
	Remove(ctx context.Context, id ID) error

	// Enumerate calls fn for every stored value, in ascending ID order
	// (which is creation order, see ID). It is used at start-up to recover
	// the queues. If fn returns an error, enumeration stops and Enumerate
	// returns that error. fn may call the Spool's other methods, for
	// example to remove expired messages during recovery.
	Enumerate(ctx context.Context, fn func(id ID, data []byte) error) error

	// Close waits for calls in progress, flushes and releases the store.
	// Further calls fail with ErrClosed (a second Close may return nil
	// instead).
	Close() error
}

// IDEnumerator is implemented by spools that can list their IDs without
// reading values; callers that need only the IDs (reclaiming orphaned
// bodies at start-up, say) use it when present and fall back to
// Enumerate. fn may call the spool's other methods.
type IDEnumerator interface {
	EnumerateIDs(ctx context.Context, fn func(id ID) error) error
}

// EnumerateIDs calls fn for every ID in s, in ascending order, through
// IDEnumerator when s implements it and through Enumerate otherwise.
func EnumerateIDs(ctx context.Context, s Spool, fn func(id ID) error) error {
	if e, ok := s.(IDEnumerator); ok {
		return e.EnumerateIDs(ctx, fn)
	}
	return s.Enumerate(ctx, func(id ID, _ []byte) error { return fn(id) })
}

// Space is the room left on the storage under a spool.
type Space struct {
	FreeBytes, TotalBytes   uint64
	FreeInodes, TotalInodes uint64 // zero when the filesystem has no inode limit
}

// SpaceReporter is implemented by spools on a filesystem. A server checks
// it before accepting mail, so that a filling disk turns into temporary
// refusals (KumoMTA's min_free_space and min_free_inodes) rather than
// failed writes or, with memory-mapped files, a crash.
type SpaceReporter interface {
	Space() (Space, error)
}

// Write is one value for [StoreAll]: Data to be stored under ID in Spool.
type Write struct {
	Spool Spool
	ID    ID
	Data  []byte
}

// ErrNotBatchable is returned by [BatchStorer.StoreBatch], having written
// nothing, when a write's spool cannot share its commits.
var ErrNotBatchable = errors.New("spool: writes cannot share one commit")

// BatchStorer is implemented by spools that can make several writes
// durable with one commit and one sync, including writes to other spools
// on the same storage (badgerspool.OpenPair's data and meta spools).
type BatchStorer interface {
	// StoreBatch stores every write, each as Store would, and returns nil
	// once all of them are durable. It returns an error wrapping
	// ErrNotBatchable, having written nothing, when a write's spool is not
	// one it can commit with. After any other error, which writes reached
	// storage is unknown, as with a failed Store.
	StoreBatch(ctx context.Context, writes []Write) error
}

// StoreAll stores every write and returns nil once all of them are
// durable. When the first write's spool is a [BatchStorer] that can commit
// them all, they share one commit: a lone writer then waits for one sync
// instead of one per spool. Otherwise each is stored with its own Store,
// concurrently. On error, which writes reached storage is unknown.
func StoreAll(ctx context.Context, writes ...Write) error {
	if len(writes) == 0 {
		return nil
	}
	if b, ok := writes[0].Spool.(BatchStorer); ok {
		err := b.StoreBatch(ctx, writes)
		if !errors.Is(err, ErrNotBatchable) {
			return err
		}
	}
	if len(writes) == 1 {
		return writes[0].Spool.Store(ctx, writes[0].ID, writes[0].Data)
	}
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes[1:] {
		wg.Go(func() { errs[i+1] = w.Spool.Store(ctx, w.ID, w.Data) })
	}
	errs[0] = writes[0].Spool.Store(ctx, writes[0].ID, writes[0].Data)
	wg.Wait()
	return errors.Join(errs...)
}
