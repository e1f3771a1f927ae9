package logs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"
)

// DefaultTailPoll is how often Tail looks for new records when following
// and TailOptions.Poll is 0.
const DefaultTailPoll = 200 * time.Millisecond

// TailOptions configures Tail.
type TailOptions struct {
	// Follow keeps reading: Tail waits for new records and new segments
	// until ctx ends, like KumoMTA's tailer and tail -f.
	Follow bool
	// Poll is the interval between looks for new data when following;
	// 0 means DefaultTailPoll.
	Poll time.Duration
}

// Tail calls fn for every record of the segments in dir, in order, like
// Scan, and with opts.Follow goes on with the records written afterwards,
// to segments still being written and to new ones, until ctx ends (then
// it returns nil) or fn fails. A segment still being written is read up
// to its last complete record; how soon a record becomes readable
// depends on the writer's flushing (LocalConfig.FlushInterval). A
// segment is finished once it is marked done (read-only) and read to its
// end.
//
// Reading a zstd segment that grows starts decompressing it from the
// beginning at each poll that finds it changed, skipping what was
// already read: cheap for segments of the usual sizes.
func Tail(ctx context.Context, dir string, opts TailOptions, fn func(*Record) error) error {
	poll := opts.Poll
	if poll <= 0 {
		poll = DefaultTailPoll
	}
	t := &tailer{fn: fn, done: map[string]bool{}, offsets: map[string]int64{}, sizes: map[string]int64{}}
	defer t.close()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		if err := t.pass(dir); err != nil {
			return err
		}
		if !opts.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

type tailer struct {
	fn      func(*Record) error
	dec     *zstd.Decoder
	done    map[string]bool  // segments read to their end after being marked done
	offsets map[string]int64 // uncompressed bytes of complete records read
	sizes   map[string]int64 // file size at the last read
}

func (t *tailer) close() {
	if t.dec != nil {
		t.dec.Close()
	}
}

// pass reads what is new in every unfinished segment.
func (t *tailer) pass(dir string) error {
	paths, err := ListSegments(dir)
	if err != nil {
		return err
	}
	for _, p := range paths {
		if t.done[p] {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue // removed meanwhile
		}
		finished := fi.Mode().Perm()&0o222 == 0 // checked before reading: what follows is all of it
		if fi.Size() != t.sizes[p] || finished {
			if err := t.read(p); err != nil {
				return err
			}
			t.sizes[p] = fi.Size()
		}
		if finished {
			t.done[p] = true
			delete(t.offsets, p)
			delete(t.sizes, p)
		}
	}
	return nil
}

// read calls fn for the complete records of path past its offset.
func (t *tailer) read(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	defer f.Close()
	in := bufio.NewReaderSize(f, 64<<10)
	var r io.Reader = in
	if magic, _ := in.Peek(4); isZstd(magic) {
		if t.dec == nil {
			if t.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1)); err != nil {
				return fmt.Errorf("logs: set up zstd decoder: %w", err)
			}
		}
		if err := t.dec.Reset(in); err != nil {
			return fmt.Errorf("logs: %s: start zstd decoding: %w", path, err)
		}
		r = t.dec
	} else if len(magic) < 4 {
		// No complete record yet, and a zstd segment may not have
		// written its header: come back when it grows.
		return nil
	}
	off := t.offsets[path]
	if off > 0 {
		// Skip what was read before (for plain segments, Discard reads
		// without decoding anything).
		if _, err := io.CopyN(io.Discard, r, off); err != nil {
			return nil // truncated under us, or not decodable that far yet
		}
	}
	lines := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := lines.ReadBytes('\n')
		if err != nil {
			// A partial line, the end of an unfinished frame or the end
			// of the file: what is complete has been read.
			if errors.Is(err, io.EOF) || err == io.ErrUnexpectedEOF { //nolint:errorlint // see scanFile
				return nil
			}
			return fmt.Errorf("logs: %s: %w", path, err)
		}
		off += int64(len(line))
		t.offsets[path] = off
		if len(line) <= 1 {
			continue
		}
		rec := new(Record)
		if err := json.Unmarshal(line, rec); err != nil {
			return fmt.Errorf("logs: %s: at byte %d: %w", path, off-int64(len(line)), err)
		}
		if err := t.fn(rec); err != nil {
			return err
		}
	}
}
