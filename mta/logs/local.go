package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Defaults of LocalConfig, the same as KumoMTA's configure_local_logs.
const (
	DefaultMaxFileSize  int64 = 1_000_000_000
	DefaultBackPressure       = 128_000
)

// ErrClosed is returned by Log and Flush after Close.
var ErrClosed = errors.New("logs: sink is closed")

// DefaultFlushInterval is LocalConfig.FlushInterval's default.
const DefaultFlushInterval = time.Second

// LocalConfig configures a Local sink. The zero value of every field but
// LogDir selects KumoMTA's default. Which meta keys and headers go into
// a record is decided by whoever builds the Record, not here.
type LocalConfig struct {
	// LogDir is the directory segment files are written to (KumoMTA
	// log_dir). It is created, with its parents, if missing.
	LogDir string

	// MaxFileSize is the number of uncompressed bytes after which a
	// segment is closed and a new one started (KumoMTA max_file_size).
	// The record that reaches the limit is the segment's last, so a
	// segment can exceed it by up to one record. 0 means
	// DefaultMaxFileSize.
	MaxFileSize int64

	// MaxSegmentDuration, if positive, closes a segment this long after
	// it was opened, even when no record arrives, so a tailer sees it
	// complete in time (KumoMTA max_segment_duration). 0 means no limit.
	MaxSegmentDuration time.Duration

	// CompressionLevel is the zstd level (KumoMTA compression_level):
	// 0 selects zstd's default (3). Other values are mapped to the
	// nearest level of the pure-Go encoder: below 3 fastest, 3–5
	// default, 6–9 better, 10 and above best.
	CompressionLevel int

	// Uncompressed writes plain JSON lines instead of zstd frames. This
	// is an mtakit extension: KumoMTA always compresses, and its tailer
	// cannot read uncompressed segments.
	Uncompressed bool

	// Suffix is appended to each segment's file name (KumoMTA per_record
	// suffix, applied to every record). It must not contain a path
	// separator.
	Suffix string

	// BackPressure is the number of encoded records that may wait for the
	// writer before Log blocks (KumoMTA back_pressure). Records are never
	// dropped. 0 means DefaultBackPressure.
	BackPressure int

	// FlushInterval bounds how long a written record may sit in the
	// compressor's (or plain writer's) buffer before it reaches the file:
	// the records a crash can lose, and how soon a reader (mtakitd logs)
	// sees them. 0 means DefaultFlushInterval (1s). Negative flushes only
	// when a buffer fills, at rotation and at Close, as KumoMTA does;
	// readers of an in-progress segment then see data in blocks of about
	// 128 KiB, and a crash loses up to a block.
	FlushInterval time.Duration

	// SyncReception makes Reception records as durable as the spool: the
	// server calls Sync(Reception) after logging a transaction's
	// Reception records and before answering 250, and Sync returns once
	// they are written, their block ended and the segment fsynced,
	// concurrent callers sharing one fsync (group commit). Segments are
	// also fsynced when they are closed. An mtakit extension
	// (configure_local_logs sync_reception); KumoMTA's log is written
	// asynchronously. It costs about one fsync per group of concurrent
	// receptions; see BENCHMARKS.md.
	SyncReception bool

	// Logger receives write failures and start-up warnings; nil means
	// slog.Default().
	Logger *slog.Logger

	// openFile creates a segment file; tests replace it to inject
	// failures. nil means createSegmentFile.
	openFile func(path string) (io.WriteCloser, error)
}

// WriteError reports records that could not be written to a segment.
// Local reports such failures, which happen on its writer goroutine, from
// the next Log, Flush or Close call; several failures before that call
// are merged into one WriteError that keeps the first cause.
type WriteError struct {
	// Path is the segment being written or created.
	Path string
	// Records is an upper bound of the records lost: those whose write
	// failed plus those written to the failed segment since it was last
	// flushed (some of which may have reached the file).
	Records int
	// Failures counts the merged failures.
	Failures int
	// Err is the first failure.
	Err error
}

func (e *WriteError) Error() string {
	more := ""
	if e.Failures > 1 {
		more = fmt.Sprintf(" (and %d later failures)", e.Failures-1)
	}
	return fmt.Sprintf("logs: write to %s failed, up to %d record(s) lost: %v%s", e.Path, e.Records, e.Err, more)
}

func (e *WriteError) Unwrap() error { return e.Err }

// EncodeError reports a record that could not be encoded (a meta value
// JSON cannot represent, such as NaN), and so was not logged.
type EncodeError struct {
	Type RecordType
	ID   string
	Err  error
}

func (e *EncodeError) Error() string {
	return fmt.Sprintf("logs: encode %s record %q: %v", e.Type, e.ID, e.Err)
}

func (e *EncodeError) Unwrap() error { return e.Err }

// Local is a Sink writing KumoMTA-style segment files: JSON lines,
// zstd-compressed unless configured otherwise, in files named by their
// UTC opening time. See the package documentation for the format.
//
// Log encodes the record on the caller's goroutine and appends the bytes
// to a bounded in-memory queue; a single writer goroutine compresses and
// writes what is queued, rotates segments and closes idle ones.
type Local struct {
	cfg LocalConfig

	mu       sync.Mutex
	notFull  sync.Cond // producers wait here when pendingN == BackPressure
	pending  []*chunk  // encoded records not yet taken by the writer; the last is being filled
	pendingN int       // records in pending
	free     []*chunk  // chunks the writer has finished with, for reuse
	closed   bool

	wake     chan struct{}      // capacity 1: pending became non-empty, or closed
	flushReq chan chan struct{} // Flush requests
	done     chan struct{}      // closed when the writer goroutine ends

	closeOnce sync.Once

	// Group commit of Sync (sync.go).
	syncMu     sync.Mutex
	syncNext   *syncRound    // the round callers join; nil until one does
	syncClosed bool          // set at shutdown: Sync returns ErrClosed
	syncWake   chan struct{} // capacity 1: a round is wanted

	errMu  sync.Mutex
	err    *WriteError // failures not yet returned to a caller
	hasErr atomic.Bool
}

// OpenLocal checks that cfg.LogDir can be written, marks segments left
// there by an earlier process as done (as KumoMTA does at start-up) and
// starts the writer. Segment files are created when the first record
// arrives.
func OpenLocal(cfg LocalConfig) (*Local, error) {
	if cfg.LogDir == "" {
		return nil, errors.New("logs: LocalConfig.LogDir is empty")
	}
	switch {
	case cfg.MaxFileSize < 0:
		return nil, fmt.Errorf("logs: LocalConfig.MaxFileSize is negative (%d)", cfg.MaxFileSize)
	case cfg.MaxFileSize == 0:
		cfg.MaxFileSize = DefaultMaxFileSize
	}
	switch {
	case cfg.BackPressure < 0:
		return nil, fmt.Errorf("logs: LocalConfig.BackPressure is negative (%d)", cfg.BackPressure)
	case cfg.BackPressure == 0:
		cfg.BackPressure = DefaultBackPressure
	}
	if cfg.MaxSegmentDuration < 0 {
		return nil, fmt.Errorf("logs: LocalConfig.MaxSegmentDuration is negative (%s)", cfg.MaxSegmentDuration)
	}
	switch {
	case cfg.FlushInterval == 0:
		cfg.FlushInterval = DefaultFlushInterval
	case cfg.FlushInterval < 0:
		cfg.FlushInterval = 0 // only when buffers fill
	}
	if strings.ContainsAny(cfg.Suffix, `/`+string(filepath.Separator)) {
		return nil, fmt.Errorf("logs: LocalConfig.Suffix %q contains a path separator", cfg.Suffix)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.openFile == nil {
		cfg.openFile = createSegmentFile
	}

	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("logs: create log directory %q: %w", cfg.LogDir, err)
	}
	if err := probeWritable(cfg.LogDir); err != nil {
		return nil, fmt.Errorf("logs: log directory %q is not writable: %w", cfg.LogDir, err)
	}
	if err := markExistingDone(cfg.LogDir); err != nil {
		cfg.Logger.Warn("logs: could not mark existing segments done", "dir", cfg.LogDir, "err", err)
	}

	w := &writer{cfg: cfg}
	if !cfg.Uncompressed {
		level := zstd.SpeedDefault
		if cfg.CompressionLevel != 0 {
			level = zstd.EncoderLevelFromZstd(cfg.CompressionLevel)
		}
		// Concurrency 2: a block is compressed while the next one
		// fills. More does not help a single stream; 1 measured the same
		// on two cores but serializes compression with file writes.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(2))
		if err != nil {
			return nil, fmt.Errorf("logs: set up zstd encoder: %w", err)
		}
		w.enc = enc
	}

	l := &Local{
		cfg:      cfg,
		wake:     make(chan struct{}, 1),
		flushReq: make(chan chan struct{}),
		done:     make(chan struct{}),
		syncWake: make(chan struct{}, 1),
	}
	l.notFull.L = &l.mu
	w.l = l
	go w.run()
	return l, nil
}

// probeWritable creates and removes a hidden file in dir. Hidden files
// are ignored by readers of the directory.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".mtakit-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	err = f.Close()
	if rmErr := os.Remove(name); err == nil {
		err = rmErr
	}
	return err
}

// Dir returns the directory segments are written to.
func (l *Local) Dir() string { return l.cfg.LogDir }

// Log encodes rec and queues it for the writer, blocking while
// BackPressure records are already queued. It does not retain rec.
//
// It returns ErrClosed after Close, an encoding error if rec cannot be
// encoded (rec is then not logged), or a *WriteError reporting an earlier
// failure of the writer (rec itself was queued).
func (l *Local) Log(rec *Record) error {
	if rec == nil {
		return errors.New("logs: Log called with a nil record")
	}
	lb := linePool.Get().(*lineBuf)
	defer func() {
		if cap(lb.b) <= 64<<10 {
			linePool.Put(lb)
		}
	}()
	line, err := encodeLine(lb.b[:0], rec)
	if err != nil {
		return &EncodeError{Type: rec.Type, ID: rec.ID, Err: err}
	}
	lb.b = line

	l.mu.Lock()
	for l.pendingN >= l.cfg.BackPressure && !l.closed {
		l.notFull.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	first := l.pendingN == 0
	l.appendLocked(line)
	l.mu.Unlock()
	if first {
		l.signal()
	}
	return l.takeErr()
}

// Flush waits until every record queued before the call is in the
// current segment file (the zstd block is ended, so a reader of the
// unfinished segment can decode it). It returns ErrClosed after Close and
// any unreported write failure.
func (l *Local) Flush() error {
	reply := make(chan struct{}, 1)
	select {
	case l.flushReq <- reply:
	case <-l.done:
		return ErrClosed
	}
	<-reply
	return l.takeErr()
}

// Close writes every queued record, finishes and closes the current
// segment and marks it done. It returns failures not already returned
// by Log or Flush. Calling Close again does nothing and returns nil.
func (l *Local) Close() error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		l.mu.Lock()
		l.closed = true
		l.notFull.Broadcast()
		l.mu.Unlock()
		l.signal()
		<-l.done
	})
	if !first {
		return nil
	}
	return l.takeErr()
}

func (l *Local) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// addErr records a writer failure for the next Log, Flush or Close.
func (l *Local) addErr(path string, records int, err error) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if l.err == nil {
		l.err = &WriteError{Path: path, Err: err}
	}
	l.err.Records += records
	l.err.Failures++
	l.hasErr.Store(true)
}

func (l *Local) takeErr() error {
	if !l.hasErr.Load() {
		return nil
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	e := l.err
	l.err = nil
	l.hasErr.Store(false)
	if e == nil {
		return nil
	}
	return e
}

// chunkSize is the size of the buffers records are queued in. Records
// never span chunks; a record larger than chunkSize gets a chunk of its
// own.
const chunkSize = 256 << 10

// maxFreeChunks bounds the memory kept for reuse after a burst.
const maxFreeChunks = 32

// chunk holds whole encoded records, each ending in '\n'.
type chunk struct{ b []byte }

// appendLocked queues line; l.mu must be held.
func (l *Local) appendLocked(line []byte) {
	var c *chunk
	if n := len(l.pending); n > 0 {
		c = l.pending[n-1]
	}
	if c == nil || len(c.b)+len(line) > cap(c.b) {
		if n := len(l.free); n > 0 && len(line) <= chunkSize {
			c = l.free[n-1]
			l.free = l.free[:n-1]
		} else {
			c = &chunk{b: make([]byte, 0, max(chunkSize, len(line)))}
		}
		l.pending = append(l.pending, c)
	}
	c.b = append(c.b, line...)
	l.pendingN++
}

// take hands the queued chunks to the writer, replacing them with the
// empty list spare. It reports whether Close has been called; once it
// has, nothing more is queued.
func (l *Local) take(spare []*chunk) (batch []*chunk, n int, closed bool) {
	l.mu.Lock()
	batch, n = l.pending, l.pendingN
	l.pending, l.pendingN = spare[:0], 0
	closed = l.closed
	if n > 0 {
		l.notFull.Broadcast()
	}
	l.mu.Unlock()
	return batch, n, closed
}

// recycle keeps up to maxFreeChunks written chunks for reuse.
func (l *Local) recycle(done []*chunk) {
	l.mu.Lock()
	for _, c := range done {
		if len(l.free) >= maxFreeChunks {
			break
		}
		if cap(c.b) == chunkSize {
			c.b = c.b[:0]
			l.free = append(l.free, c)
		}
	}
	l.mu.Unlock()
}

// writer is the state owned by the writer goroutine.
type writer struct {
	l   *Local
	cfg LocalConfig

	enc      *zstd.Encoder // reused for every segment; nil when uncompressed
	buf      *bufio.Writer // reused for every segment when uncompressed
	seg      *segment
	lastName time.Time // opening time of the last segment, for strictly increasing names
	spare    []*chunk  // empty list to swap with Local.pending

	expire  *time.Timer // MaxSegmentDuration of seg
	expireC <-chan time.Time
	flushT  *time.Timer // FlushInterval
	flushC  <-chan time.Time

	lastReport time.Time // rate limit of error logging
	suppressed int       // failures not logged since lastReport

	// syncFailure is the first failure since the last sync round: the
	// next round reports it, since the records it lost may be that
	// round's.
	syncFailure error
}

func (w *writer) run() {
	defer close(w.l.done)
	for {
		select {
		case <-w.l.wake:
			if w.drain() {
				w.shutdown()
				return
			}
		case <-w.expireC:
			w.closeSegment()
		case <-w.flushC:
			w.flushC = nil
			w.flush()
		case <-w.l.syncWake:
			if w.syncRound() {
				w.shutdown()
				return
			}
		case reply := <-w.l.flushReq:
			closed := w.drain()
			w.flush()
			reply <- struct{}{}
			if closed {
				w.shutdown()
				return
			}
		}
	}
}

// drain writes the queued records and reports whether the sink is
// closed.
func (w *writer) drain() bool {
	batch, n, closed := w.l.take(w.spare)
	if n > 0 {
		for _, c := range batch {
			w.writeBatch(c.b)
		}
		w.l.recycle(batch)
		if w.cfg.FlushInterval > 0 && w.flushC == nil && w.seg != nil {
			if w.flushT == nil {
				w.flushT = time.NewTimer(w.cfg.FlushInterval)
			} else {
				w.flushT.Reset(w.cfg.FlushInterval)
			}
			w.flushC = w.flushT.C
		}
	}
	clear(batch) // drop references to chunks not kept for reuse
	w.spare = batch[:0]
	return closed
}

func (w *writer) shutdown() {
	w.closeSegment()
	w.endSync()
	if w.suppressed > 0 {
		w.cfg.Logger.Error("logs: write failures not logged individually", "dir", w.cfg.LogDir, "failures", w.suppressed)
	}
	if w.enc != nil {
		// Release the encoder's goroutines; it has no writer attached.
		w.enc.Reset(io.Discard)
		if err := w.enc.Close(); err != nil {
			w.cfg.Logger.Warn("logs: release zstd encoder", "err", err)
		}
	}
}

// writeBatch writes newline-terminated records, rotating at record
// boundaries whenever a segment reaches MaxFileSize.
func (w *writer) writeBatch(b []byte) {
	for len(b) > 0 {
		if w.seg == nil {
			if err := w.openSegment(); err != nil {
				w.fail("", bytes.Count(b, []byte{'\n'}), err)
				return
			}
		}
		chunk := b
		if room := w.cfg.MaxFileSize - w.seg.written; int64(len(b)) >= room {
			// End the chunk with the record whose last byte reaches the
			// limit; JSON lines contain no raw newline.
			from := max(room-1, 0)
			if i := bytes.IndexByte(b[from:], '\n'); i >= 0 {
				chunk = b[:from+int64(i)+1]
			}
		}
		b = b[len(chunk):]
		if err := w.seg.write(chunk); err != nil {
			w.fail(w.seg.path, w.seg.unflushed+bytes.Count(chunk, []byte{'\n'}), err)
			w.abandonSegment()
			continue
		}
		if w.seg.written >= w.cfg.MaxFileSize {
			w.closeSegment()
		}
	}
}

func (w *writer) openSegment() error {
	t := time.Now().Round(0)
	if !t.After(w.lastName) {
		t = w.lastName.Add(time.Nanosecond)
	}
	var (
		path string
		f    io.WriteCloser
		err  error
	)
	for range 1000 {
		path = filepath.Join(w.cfg.LogDir, SegmentName(t, w.cfg.Suffix))
		f, err = w.cfg.openFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			// The directory was removed; recreate it as KumoMTA does.
			if mkErr := os.MkdirAll(w.cfg.LogDir, 0o755); mkErr != nil {
				return fmt.Errorf("open segment %s: %w (recreating directory: %w)", path, err, mkErr)
			}
			f, err = w.cfg.openFile(path)
		}
		if !errors.Is(err, fs.ErrExist) {
			break
		}
		t = t.Add(time.Nanosecond)
	}
	if err != nil {
		return fmt.Errorf("open segment %s: %w", path, err)
	}
	w.lastName = t
	s := &segment{path: path, file: f}
	if w.enc != nil {
		w.enc.Reset(f)
		s.enc = w.enc
	} else {
		if w.buf == nil {
			w.buf = bufio.NewWriterSize(f, 256<<10)
		} else {
			w.buf.Reset(f)
		}
		s.buf = w.buf
	}
	w.seg = s
	if d := w.cfg.MaxSegmentDuration; d > 0 {
		if w.expire == nil {
			w.expire = time.NewTimer(d)
		} else {
			w.expire.Reset(d)
		}
		w.expireC = w.expire.C
	}
	return nil
}

// closeSegment finishes the current segment, if any.
func (w *writer) closeSegment() {
	if w.seg == nil {
		return
	}
	s := w.seg
	w.detach()
	if err := s.finish(w.cfg.SyncReception); err != nil {
		w.fail(s.path, s.unflushed, err)
	}
}

// abandonSegment closes a segment whose write failed, without trying to
// finish its frame, and marks it done so tailers move on.
func (w *writer) abandonSegment() {
	s := w.seg
	w.detach()
	if err := s.file.Close(); err != nil {
		w.cfg.Logger.Warn("logs: close failed segment", "path", s.path, "err", err)
	}
	if err := markDone(s.path); err != nil {
		w.cfg.Logger.Warn("logs: mark failed segment done", "path", s.path, "err", err)
	}
}

func (w *writer) detach() {
	w.seg = nil
	if w.expire != nil {
		w.expire.Stop()
	}
	w.expireC = nil
	if w.flushT != nil {
		w.flushT.Stop()
	}
	w.flushC = nil
}

func (w *writer) flush() {
	if w.seg == nil {
		return
	}
	if err := w.seg.flush(); err != nil {
		w.fail(w.seg.path, w.seg.unflushed, err)
		w.abandonSegment()
	}
}

// fail logs a write failure (at most once a second) and keeps it for the
// next caller of Log, Flush or Close.
func (w *writer) fail(path string, records int, err error) {
	if path == "" {
		path = w.cfg.LogDir
	}
	w.l.addErr(path, records, err)
	if w.syncFailure == nil {
		w.syncFailure = &WriteError{Path: path, Records: records, Failures: 1, Err: err}
	}
	now := time.Now()
	if now.Sub(w.lastReport) < time.Second {
		w.suppressed++
		return
	}
	w.cfg.Logger.Error("logs: write failed", "path", path, "records_lost", records,
		"earlier_failures_not_logged", w.suppressed, "err", err)
	w.lastReport = now
	w.suppressed = 0
}

// lineBuf is a pooled buffer for encoding a record in Log.
type lineBuf struct{ b []byte }

var linePool = sync.Pool{New: func() any { return &lineBuf{b: make([]byte, 0, 2048)} }}

// encodeLine appends rec's JSON line, ending in '\n', to b.
func encodeLine(b []byte, rec *Record) ([]byte, error) {
	b, err := appendRecord(b, rec)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
