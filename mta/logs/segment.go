package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// SegmentName returns the file name KumoMTA gives a segment opened at t:
// the UTC time formatted with chrono's "%Y%m%d-%H%M%S%.f" (the fraction
// has 0, 3, 6 or 9 digits, the fewest that represent the nanoseconds
// exactly, and is absent when they are zero), followed by suffix.
// Names of one directory sort in the order the segments were opened.
func SegmentName(t time.Time, suffix string) string {
	t = t.UTC()
	b := make([]byte, 0, len("20060102-150405.000000000")+len(suffix))
	b = t.AppendFormat(b, "20060102-150405")
	b = appendAutoSiFraction(b, t.Nanosecond())
	return string(append(b, suffix...))
}

// segment is the file the writer goroutine is filling.
type segment struct {
	path    string
	file    io.WriteCloser
	enc     *zstd.Encoder // nil when uncompressed
	buf     *bufio.Writer // nil when compressed
	written int64         // uncompressed bytes, as KumoMTA counts them
	// unflushed counts records written since the last successful flush:
	// the records a failure of this segment may lose.
	unflushed int
	// unsynced counts records written since the last fsync (sync.go), and
	// dirSynced whether the directory entry was fsynced.
	unsynced  int
	dirSynced bool
}

func (s *segment) write(p []byte) error {
	var err error
	if s.enc != nil {
		_, err = s.enc.Write(p)
	} else {
		_, err = s.buf.Write(p)
	}
	if err != nil {
		return fmt.Errorf("write segment %s: %w", s.path, err)
	}
	s.written += int64(len(p))
	n := bytes.Count(p, []byte{'\n'})
	s.unflushed += n
	s.unsynced += n
	return nil
}

// flush pushes buffered data to the file. For zstd it ends the current
// block, so everything written so far can be decompressed by a reader of
// the unfinished frame.
func (s *segment) flush() error {
	var err error
	if s.enc != nil {
		err = s.enc.Flush()
	} else {
		err = s.buf.Flush()
	}
	if err != nil {
		return fmt.Errorf("flush segment %s: %w", s.path, err)
	}
	s.unflushed = 0
	return nil
}

// finish completes the zstd frame (or flushes the buffer), fsyncs the
// file if sync is set, closes it and marks it done. The file is closed
// and marked even when finishing fails, so a broken segment is not left
// looking in progress.
func (s *segment) finish(sync bool) error {
	var errs []error
	if s.enc != nil {
		if err := s.enc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("finish zstd frame of segment %s: %w", s.path, err))
		}
	} else if err := s.buf.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("flush segment %s: %w", s.path, err))
	}
	if sync && len(errs) == 0 {
		if err := s.sync(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.file.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close segment %s: %w", s.path, err))
	}
	if err := markDone(s.path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// markDone removes the write permission bits of path. KumoMTA's tailer
// treats a read-only segment as complete and a writable one as still
// being written.
func markDone(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("mark segment done: %w", err)
	}
	if err := os.Chmod(path, fi.Mode().Perm()&^0o222); err != nil {
		return fmt.Errorf("mark segment done: %w", err)
	}
	return nil
}

// markExistingDone marks every regular, non-hidden file in dir done, as
// KumoMTA does when its logger starts: segments left writable by a
// previous process will never be written again.
func markExistingDone(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("mark existing segments in %s done: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		if err := markDone(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// createSegmentFile creates path, failing if it exists. The mode is 0666
// before the umask, like KumoMTA's.
func createSegmentFile(path string) (io.WriteCloser, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
}
