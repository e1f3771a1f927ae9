// Package badgerspool is the durable [spool.Spool] of mtakit, on
// github.com/dgraph-io/badger/v4. It lives apart from package spool so
// that a program with a spool of its own never links badger.
package badgerspool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mtakit/mtakit/spool"
)

// Options configures [Open]. The zero value is a good default.
type Options struct {
	// Logger receives badger's warnings and errors and the spool's own
	// messages. Nil means slog.Default().
	Logger *slog.Logger

	// VerboseLog also forwards badger's info and debug messages, which are
	// dropped by default because badger is chatty at those levels.
	VerboseLog bool

	// ValueThreshold is the size from which a value is kept in badger's
	// value log rather than inline in the LSM tree; at most 1 MiB. Zero
	// means 64 KiB: typical messages and all metadata stay in the LSM, where
	// a Remove is reclaimed by compaction alone, while large bodies are
	// written once to the value log instead of being rewritten by every
	// compaction and filling memtables.
	ValueThreshold int64

	// Reserve is the size of a file of preallocated space kept in the
	// spool directory and given up when the filesystem fills, so that
	// badger's memory-mapped writes never run out of space (which kills
	// the process with SIGBUS); see ErrNoSpace. Zero means DefaultReserve
	// (64 MiB); negative disables it.
	Reserve int64

	// ValueLogGCInterval is how often value-log garbage collection runs to
	// reclaim the space of removed large values. Zero means 5 minutes; a
	// negative value disables it.
	ValueLogGCInterval time.Duration
}

const (
	defaultValueThreshold     = 64 << 10
	defaultValueLogGCInterval = 5 * time.Minute

	// gcDiscardRatio: rewrite a value-log file once half of it is garbage.
	// A spool is a queue, so old files become almost entirely garbage and
	// rewriting them is cheap.
	gcDiscardRatio = 0.5
	// gcMaxRewrites bounds one GC round so Close is never kept waiting long.
	gcMaxRewrites = 16

	// maxGroupOps and maxGroupBytes cap how many writes share one commit.
	// The byte cap keeps one commit's value-log write far below badger's
	// 4 GiB per-file limit even when many 20 MB bodies arrive at once.
	maxGroupOps   = 256
	maxGroupBytes = 64 << 20

	// valueLogFileSize is smaller than badger's 1 GiB default because disk
	// is freed a whole value-log file at a time, so smaller files let GC
	// return space sooner. It is also the largest value Store accepts.
	valueLogFileSize = 256 << 20

	// Enumerate reads values in chunks of at most this many entries or
	// bytes (but at least one entry), so fn runs outside any badger
	// transaction and memory stays bounded with 20 MB bodies.
	enumChunkEntries = 128
	enumChunkBytes   = 16 << 20
	enumIDChunk      = 4096 // IDs per read transaction in EnumerateIDs

	// removalLinger is how long queued removals wait for a Store to share a
	// commit with before they are committed alone (see commitLoop). A crash
	// loses at most this much of removals, which means retries, not loss.
	removalLinger = 10 * time.Millisecond

	blockCacheSize = 8 << 20
)

// keyPrefix namespaces the entries of a spool opened with Open, so
// the database can hold other records (a format version, say) later
// without disturbing Enumerate. OpenPair uses "data/" and "meta/".
var keyPrefix = []byte("msg/")

func badgerKey(prefix []byte, id spool.ID) []byte {
	k := make([]byte, 0, len(prefix)+len(id))
	return append(append(k, prefix...), id[:]...)
}

// Spool is a durable [spool.Spool] backed by github.com/dgraph-io/badger/v4.
//
// # Durability
//
// Badger runs with SyncWrites, so every commit msyncs its value-log file
// and its memtable write-ahead log before returning, and the old files are
// synced when either rotates. Badger's own writer merges concurrent commits
// into one write but still syncs the WAL once per commit, so concurrent
// one-transaction-per-Store writers barely scale. Badger therefore adds its
// own group commit: writes that arrive while a commit is in flight are merged
// into the next transaction and share its syncs. [Spool.StoreBatch] puts
// several writes (a message's data and meta, on an OpenPair) into one group
// on purpose, so that even a lone writer pays one commit per message; and
// removals, which nobody waits for, ride along with the next Store's commit
// rather than cost a sync of their own.
//
// The alternative, SyncWrites off plus a shared db.Sync after each group, is
// not truly durable: db.Sync syncs only the current WAL and value-log file,
// so a write that landed in a file rotated out before the sync could be
// acknowledged without being on disk. It was not faster either. Measured
// with 2 KiB values on a 2-core VM with ext4 (msgs/s for 1 / 10 / 50
// writers): SyncWrites + group commit 2.5k / 13.6k / 47k; db.Sync + group
// commit 2.7k / 8.7k / 38k; SyncWrites with a transaction per Store
// 3.1k / 4.5k / 3.8k.
//
// Process death after Store returns never loses the value; power loss does
// not either, provided the disk honours flushes.
//
// # Layout
//
// Keys are "msg/" followed by the 16 ID bytes, so badger's key order is ID
// order. Values smaller than [Options.ValueThreshold] live in the LSM
// tree, larger ones in the value log, which a background goroutine garbage
// collects. Values may be up to 256 MiB.
type Spool struct {
	e      *engine
	prefix []byte

	mu     sync.Mutex
	closed bool
}

// engine is one badger database and its group-commit loop, shared by the
// spools opened on it.
type engine struct {
	refs int // open spools; guarded by mu

	db   *badger.DB
	dir  string
	log  *slog.Logger
	blog *badgerLogger

	writes chan *writeOp
	stop   chan struct{}
	bg     sync.WaitGroup // commit loop and GC loop

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup

	// Read-your-removals and enumeration consistency; see Remove and
	// Enumerate.
	pendingMu sync.Mutex
	pending   map[string]int           // keys of queued, uncommitted removals
	commits   uint64                   // committed groups so far
	cursors   map[*enumCursor]struct{} // Enumerate calls in progress
	touched   map[string]uint64        // key -> commit that last wrote it, kept while cursors exist

	reserve *reserve // space given up when the disk fills
}

// enumCursor is one Enumerate in progress: the commit count when its
// current chunk was read. A key touched by a later commit may be stale in
// the chunk and is read again.
type enumCursor struct{ readAt uint64 }

var _ spool.Spool = (*Spool)(nil)

// writeOp is one Store or Remove waiting for the commit loop.
type writeOp struct {
	key   []byte
	value []byte // nil with del
	del   bool
	done  chan error
	async bool     // a Remove nobody waits for (see Remove)
	id    spool.ID // for async ops
	// batch, for a StoreBatch, holds its stores: the commit loop takes
	// them into one group together, and each reports on done.
	batch []*writeOp
}

// Open opens (creating if needed) a badger spool in dir. Only one
// process may have a directory open at a time; badger holds a lock file.
func Open(dir string, opts Options) (*Spool, error) {
	e, err := openEngine(dir, opts, 1)
	if err != nil {
		return nil, err
	}
	return &Spool{e: e, prefix: keyPrefix}, nil
}

// OpenPair opens (creating if needed) one badger database in dir
// holding both of a server's spools, data and meta, as separate key
// spaces. Stores to both share group commits, so a message's data and
// meta become durable with one sync instead of two. The database closes
// when both spools are closed.
func OpenPair(dir string, opts Options) (data, meta *Spool, err error) {
	e, err := openEngine(dir, opts, 2)
	if err != nil {
		return nil, nil, err
	}
	return &Spool{e: e, prefix: []byte("data/")}, &Spool{e: e, prefix: []byte("meta/")}, nil
}

func openEngine(dir string, opts Options, refs int) (*engine, error) {
	if dir == "" {
		return nil, errors.New("spool: open badger: empty directory path")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	switch {
	case opts.ValueThreshold == 0:
		opts.ValueThreshold = defaultValueThreshold
	case opts.ValueThreshold < 0:
		return nil, fmt.Errorf("spool: open badger at %s: negative ValueThreshold %d", dir, opts.ValueThreshold)
	}
	if opts.ValueLogGCInterval == 0 {
		opts.ValueLogGCInterval = defaultValueLogGCInterval
	}
	if opts.Reserve == 0 {
		opts.Reserve = DefaultReserve
	}
	// Badger would create the directory too, but its error for a path under
	// a regular file or without permission is less direct than MkdirAll's.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: open badger at %s: %w", dir, err)
	}

	log := opts.Logger.With("component", "spool", "dir", dir)
	// On a full disk, give badger the reserve before it replays and
	// writes (see reserve).
	rsv := newReserve(dir, opts.Reserve, log)
	rsv.forFlush(dir)
	blog := &badgerLogger{l: log.With("lib", "badger"), verbose: opts.VerboseLog}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(blog).
		WithValueThreshold(opts.ValueThreshold).
		// Spool writes never read before writing, so there is nothing
		// for conflict detection to find.
		WithDetectConflicts(false).
		// Metrics go to process-global expvars; mtakit exports its own.
		WithMetricsEnabled(false).
		// Each message is read about once, so a large block cache (256 MiB
		// by default) buys little. It is Go heap, and recovery and the
		// orphan scan fill it with blocks read once; 8 MiB instead of 32
		// took about 160 B (of 1.8 KiB) off the RSS per queued message
		// after recovering 200 000 messages (BENCHMARKS.md).
		WithBlockCacheSize(blockCacheSize).
		WithValueLogFileSize(valueLogFileSize)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("spool: open badger at %s: %w", dir, err)
	}

	b := &engine{
		refs:    refs,
		db:      db,
		dir:     dir,
		log:     log,
		blog:    blog,
		writes:  make(chan *writeOp, maxGroupOps),
		stop:    make(chan struct{}),
		pending: make(map[string]int),
		cursors: make(map[*enumCursor]struct{}),
		touched: make(map[string]uint64),
		reserve: rsv,
	}
	rsv.ensure(dir)
	b.bg.Add(1)
	go b.commitLoop()
	if opts.ValueLogGCInterval > 0 {
		b.bg.Add(1)
		go b.gcLoop(opts.ValueLogGCInterval)
	}
	return b, nil
}

// enter registers an in-flight call; it reports false once Close has
// begun. Unlike an RWMutex held for the call's duration it lets fn passed
// to Enumerate call Store while Close waits.
func (b *engine) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.inflight.Add(1)
	return true
}

func (b *engine) leave() { b.inflight.Done() }

// Store implements [spool.Spool.Store]: when it returns nil, data is synced to
// disk. Badger does not copy data, but Store does not return before the
// commit is done, so data is not retained. Once the write is queued, ctx
// is no longer consulted: abandoning it would leave the outcome unknown.
func (b *Spool) Store(ctx context.Context, id spool.ID, data []byte) error {
	if b.isClosed() {
		return fmt.Errorf("spool: store %s: %w", id, spool.ErrClosed)
	}
	if err := b.e.write(ctx, &writeOp{key: badgerKey(b.prefix, id), value: data}); err != nil {
		return fmt.Errorf("spool: store %s: %w", id, err)
	}
	return nil
}

// Remove implements [spool.Spool.Remove]. It does not wait for the commit: a
// removal lost in a crash only means a retry, so the caller (a delivery
// worker) need not pay for a sync. The removal rides along with the next
// commit of a Store, or is committed without one after removalLinger
// (10 ms); until then Load and Enumerate treat the ID as absent, so
// callers see their own removals at once. Close waits for queued
// removals; a removal that fails to commit is logged.
func (b *Spool) Remove(ctx context.Context, id spool.ID) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	e := b.e
	if b.isClosed() || !e.enter() {
		return fmt.Errorf("spool: remove %s: %w", id, spool.ErrClosed)
	}
	key := badgerKey(b.prefix, id)
	e.pendingMu.Lock()
	e.pending[string(key)]++
	e.pendingMu.Unlock()
	op := &writeOp{key: key, del: true, async: true, id: id}
	select {
	case e.writes <- op:
		return nil // leave() is called when the commit is done
	case <-ctx.Done():
		e.pendingMu.Lock()
		e.forgetLocked(string(key)) // never queued: nothing to defer
		e.pendingMu.Unlock()
		e.leave()
		return fmt.Errorf("spool: remove %s: %w", id, ctx.Err())
	}
}

var _ spool.BatchStorer = (*Spool)(nil)

// StoreBatch implements [spool.BatchStorer]: writes to spools on this
// spool's database (itself, or the other spool of an OpenPair) are
// committed in one group, so they share its syncs; a write to any other
// spool makes it fail with [spool.ErrNotBatchable] before anything is
// written. When it returns nil, every write is synced to disk.
func (b *Spool) StoreBatch(ctx context.Context, writes []spool.Write) error {
	op := &writeOp{batch: make([]*writeOp, 0, len(writes))}
	for _, w := range writes {
		s, ok := w.Spool.(*Spool)
		if !ok || s.e != b.e {
			return fmt.Errorf("spool: store batch of %d: %w", len(writes), spool.ErrNotBatchable)
		}
		if s.isClosed() {
			return fmt.Errorf("spool: store %s: %w", w.ID, spool.ErrClosed)
		}
		op.batch = append(op.batch, &writeOp{key: badgerKey(s.prefix, w.ID), value: w.Data})
	}
	if len(op.batch) == 0 {
		return nil
	}
	if err := b.e.write(ctx, op); err != nil {
		return fmt.Errorf("spool: store batch of %d (first %s): %w", len(writes), writes[0].ID, err)
	}
	return nil
}

func (b *Spool) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// removed reports whether a removal of id is queued but not committed.
func (b *engine) removed(key []byte) bool {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	return b.pending[string(key)] > 0
}

func (b *engine) forgetLocked(key string) {
	if b.pending[key]--; b.pending[key] <= 0 {
		delete(b.pending, key)
	}
}

// committed records a committed group before its callers hear of it:
// every key it wrote is marked touched for the enumerations in progress,
// and its removals stop being pending (Load then reads the database,
// which has them).
func (b *engine) committed(ops []*writeOp) {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	b.commits++
	for _, op := range ops {
		if len(b.cursors) > 0 {
			b.touched[string(op.key)] = b.commits
		}
		if op.async {
			b.forgetLocked(string(op.key))
		}
	}
}

// beginEnumerate and endEnumerate bracket an Enumerate.
func (b *engine) beginEnumerate() *enumCursor {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	c := &enumCursor{readAt: b.commits}
	b.cursors[c] = struct{}{}
	return c
}

func (b *engine) endEnumerate(c *enumCursor) {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	delete(b.cursors, c)
	b.pruneLocked()
}

// nextChunk notes that c is about to read a chunk: keys touched by commits
// before now are in it as committed.
func (b *engine) nextChunk(c *enumCursor) {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	c.readAt = b.commits
	b.pruneLocked()
}

// pruneLocked forgets touches that every enumeration's chunk already
// reflects, so the map stays bounded however enumerations overlap.
func (b *engine) pruneLocked() {
	if len(b.cursors) == 0 {
		clear(b.touched)
		return
	}
	oldest := b.commits
	for c := range b.cursors {
		oldest = min(oldest, c.readAt)
	}
	for k, at := range b.touched {
		if at <= oldest {
			delete(b.touched, k)
		}
	}
}

// freshness says how an enumeration should treat a key read in its current
// chunk: skip it (removal pending), read it again (written since), or use it.
func (b *engine) freshness(c *enumCursor, key []byte) (skip, reread bool) {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	if b.pending[string(key)] > 0 {
		return true, false
	}
	at, ok := b.touched[string(key)]
	return false, ok && at > c.readAt
}

// finish reports an op's outcome: to the waiting caller, or for an async
// removal to the log.
func (b *engine) finish(op *writeOp, err error) {
	if !op.async {
		op.done <- err
		return
	}
	if err != nil {
		b.log.Error("spool: queued removal failed; the message may be retried after a restart", "id", op.id, "dir", b.dir, "err", err)
	}
	b.leave()
}

func (b *engine) write(ctx context.Context, op *writeOp) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !b.enter() {
		return spool.ErrClosed
	}
	defer b.leave()
	n := max(1, len(op.batch))
	op.done = make(chan error, n)
	for _, sub := range op.batch {
		sub.done = op.done
	}
	select {
	case b.writes <- op:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The writes of a batch share their commits, so their errors are
	// mostly one and the same: report the first.
	var first error
	for range n {
		if err := <-op.done; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (op *writeOp) apply(txn *badger.Txn) error {
	if op.del {
		return txn.Delete(op.key)
	}
	return txn.Set(op.key, op.value)
}

// commitLoop is the group commit: it takes the first waiting write, adds
// every other write already queued, and commits them together. Writes
// arriving during a commit queue up for the next one, so the number of
// syncs adapts to load instead of growing with it.
//
// A group of removals alone is not committed at once: nobody waits for
// it, and each commit costs a sync, which a Store arriving meanwhile would
// wait for before its own. It waits up to removalLinger for a Store to
// share a commit with, or until it is full.
func (b *engine) commitLoop() {
	defer b.bg.Done()
	group := make([]*writeOp, 0, maxGroupOps)
	var (
		size    int
		waiters bool // a Store in the group: someone waits for the commit
	)
	add := func(op *writeOp) {
		waiters = waiters || !op.async
		if op.batch == nil {
			group = append(group, op)
			size += len(op.value)
			return
		}
		for _, sub := range op.batch {
			group = append(group, sub)
			size += len(sub.value)
		}
	}
	full := func() bool { return len(group) >= maxGroupOps || size >= maxGroupBytes }
	fill := func() {
		for !full() {
			select {
			case op := <-b.writes:
				add(op)
			default:
				return
			}
		}
	}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		group, size, waiters = group[:0], 0, false
		select {
		case op := <-b.writes:
			add(op)
		case <-b.stop:
			return
		}
		fill()
		if !waiters && !full() {
			linger.Reset(removalLinger)
		wait:
			for !waiters && !full() {
				select {
				case op := <-b.writes:
					add(op)
				case <-linger.C:
					break wait
				case <-b.stop:
					// Close stops the loop only once every queued op is
					// answered, so this is for safety only.
					break wait
				}
			}
			linger.Stop()
			fill()
		}
		b.commitGroup(group)
		clear(group) // drop references to caller buffers
	}
}

// commitGroup commits ops in as few transactions as badger's size limit
// allows and reports each op's outcome on its done channel.
func (b *engine) commitGroup(ops []*writeOp) {
	var size int64
	for _, op := range ops {
		size += int64(len(op.key) + len(op.value))
	}
	if err := b.reserve.admit(b.dir, size); err != nil {
		// Writing now could kill the process (badger's files are memory
		// mapped); refuse the group instead.
		b.committed(ops) // nothing written, but no longer pending
		for _, op := range ops {
			b.finish(op, err)
		}
		return
	}
	for len(ops) > 0 {
		txn := b.db.NewTransaction(true)
		var inTxn []*writeOp
		for len(ops) > 0 {
			op := ops[0]
			err := op.apply(txn)
			if errors.Is(err, badger.ErrTxnTooBig) && len(inTxn) > 0 {
				break // commit what we have, retry op in a fresh txn
			}
			ops = ops[1:]
			if err != nil {
				// Only this op is bad (a value over the value-log file
				// size, say); the transaction is unaffected.
				b.committed([]*writeOp{op}) // nothing written, but no longer pending
				b.finish(op, err)
				continue
			}
			inTxn = append(inTxn, op)
		}
		err := b.commit(txn)
		b.committed(inTxn)
		for _, op := range inTxn {
			b.finish(op, err)
		}
	}
}

func (b *engine) commit(txn *badger.Txn) error {
	defer txn.Discard()
	if err := txn.Commit(); err != nil {
		return err
	}
	// Sticky: after a failed sync the kernel may have dropped the dirty
	// pages, so nothing written since can be trusted to be on disk either.
	if msg := b.blog.syncFailure.Load(); msg != nil {
		return fmt.Errorf("value log sync failed, refusing writes until restart: %s", *msg)
	}
	return nil
}

// Load implements [spool.Spool.Load]. The returned slice is the caller's.
func (b *Spool) Load(ctx context.Context, id spool.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	e := b.e
	if b.isClosed() || !e.enter() {
		return nil, fmt.Errorf("spool: load %s: %w", id, spool.ErrClosed)
	}
	defer e.leave()
	key := badgerKey(b.prefix, id)
	if e.removed(key) {
		return nil, fmt.Errorf("spool: load %s: %w", id, spool.ErrNotFound)
	}
	var v []byte
	err := e.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("spool: load %s: %w", id, spool.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	if v == nil {
		v = []byte{} // an empty value is stored, not absent
	}
	return v, nil
}

// Enumerate implements [spool.Spool.Enumerate]. It reads in chunks, each from its
// own read transaction, and calls fn between chunks' transactions, so fn may
// call Store and Remove and take its time without pinning old versions.
// Consequently it is not a snapshot: a value stored during enumeration with
// an ID beyond the current position is visited. A key written (stored or
// removed) after its chunk was read is read again before fn sees it, so fn
// gets the current value, as from Load, and never a removed one.
func (b *Spool) Enumerate(ctx context.Context, fn func(id spool.ID, data []byte) error) error {
	eng := b.e
	if b.isClosed() || !eng.enter() {
		return fmt.Errorf("spool: enumerate: %w", spool.ErrClosed)
	}
	defer eng.leave()
	cur := eng.beginEnumerate()
	defer eng.endEnumerate(cur)
	prefix := b.prefix
	type entry struct {
		id   spool.ID
		data []byte
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: enumerate: %w", err)
	}
	seek := prefix
	for {
		var chunk []entry
		eng.nextChunk(cur)
		err := eng.db.View(func(txn *badger.Txn) error {
			iopts := badger.DefaultIteratorOptions
			iopts.Prefix = prefix
			iopts.PrefetchValues = false // values are copied one by one below
			it := txn.NewIterator(iopts)
			defer it.Close()
			size := 0
			for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
				if len(chunk) >= enumChunkEntries || (len(chunk) > 0 && size >= enumChunkBytes) {
					break
				}
				item := it.Item()
				k := item.Key()
				var e entry
				if len(k) != len(prefix)+len(e.id) {
					return fmt.Errorf("malformed key %q", k)
				}
				copy(e.id[:], k[len(prefix):])
				v, err := item.ValueCopy(nil)
				if err != nil {
					return fmt.Errorf("read %s: %w", e.id, err)
				}
				if v == nil {
					v = []byte{}
				}
				e.data = v
				chunk = append(chunk, e)
				size += len(v)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("spool: enumerate: %w", err)
		}
		if len(chunk) == 0 {
			return nil
		}
		for _, e := range chunk {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("spool: enumerate: %w", err)
			}
			skip, reread := eng.freshness(cur, badgerKey(prefix, e.id))
			if reread {
				// Stored or removed since the chunk was read: use the
				// current value, as Load would.
				v, err := b.Load(ctx, e.id)
				switch {
				case errors.Is(err, spool.ErrNotFound):
					skip = true
				case err != nil:
					return fmt.Errorf("spool: enumerate: %w", err)
				}
				e.data = v
			}
			if skip {
				continue
			}
			if err := fn(e.id, e.data); err != nil {
				return err
			}
		}
		// Resume just after the last key: keys have a fixed length, so
		// appending a zero byte gives the smallest key greater than it.
		last := chunk[len(chunk)-1].id
		seek = append(badgerKey(prefix, last), 0)
	}
}

// EnumerateIDs implements [IDEnumerator]: Enumerate over keys only, which
// reads no value from the value log. IDs whose removal is queued are
// skipped; fn runs outside any transaction.
func (b *Spool) EnumerateIDs(ctx context.Context, fn func(id spool.ID) error) error {
	eng := b.e
	if b.isClosed() || !eng.enter() {
		return fmt.Errorf("spool: enumerate ids: %w", spool.ErrClosed)
	}
	defer eng.leave()
	prefix := b.prefix
	seek := prefix
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("spool: enumerate ids: %w", err)
		}
		chunk := make([]spool.ID, 0, enumIDChunk)
		err := eng.db.View(func(txn *badger.Txn) error {
			iopts := badger.DefaultIteratorOptions
			iopts.Prefix = prefix
			iopts.PrefetchValues = false
			it := txn.NewIterator(iopts)
			defer it.Close()
			for it.Seek(seek); it.ValidForPrefix(prefix) && len(chunk) < enumIDChunk; it.Next() {
				k := it.Item().Key()
				var id spool.ID
				if len(k) != len(prefix)+len(id) {
					return fmt.Errorf("malformed key %q", k)
				}
				copy(id[:], k[len(prefix):])
				chunk = append(chunk, id)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("spool: enumerate ids: %w", err)
		}
		if len(chunk) == 0 {
			return nil
		}
		for _, id := range chunk {
			if eng.removed(badgerKey(prefix, id)) {
				continue
			}
			if err := fn(id); err != nil {
				return err
			}
		}
		seek = append(badgerKey(prefix, chunk[len(chunk)-1]), 0)
	}
}

// gcLoop runs value-log GC every interval until Close.
func (b *engine) gcLoop(interval time.Duration) {
	defer b.bg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		for range gcMaxRewrites {
			err := b.db.RunValueLogGC(gcDiscardRatio)
			if err != nil {
				// ErrNoRewrite: nothing worth rewriting; ErrRejected:
				// another GC is running. Neither is a problem.
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					b.log.Warn("value log GC failed", "err", err)
				}
				break
			}
			b.log.Debug("value log GC rewrote a file")
			select {
			case <-b.stop:
				return
			default:
			}
		}
	}
}

// Close closes this spool; calls made once Close has begun, including a
// second Close, fail with ErrClosed. When the last spool on the database
// is closed, Close waits for in-flight calls (and queued removals) to
// finish, stops the background goroutines and closes the database.
func (b *Spool) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return spool.ErrClosed
	}
	b.closed = true
	b.mu.Unlock()
	return b.e.release()
}

func (b *engine) release() error {
	b.mu.Lock()
	b.refs--
	if b.refs > 0 {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()

	b.inflight.Wait() // every queued write has been answered
	close(b.stop)
	b.bg.Wait()
	b.reserve.forFlush(b.dir) // Close flushes the memtable to a table
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("spool: close badger at %s: %w", b.dir, err)
	}
	return nil
}
