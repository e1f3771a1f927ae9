package logs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ListSegments returns the paths of the segment files in dir in name
// order, which is the order they were opened. Hidden files (names
// starting with '.') and anything but regular files are skipped.
func ListSegments(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("logs: list segments: %w", err)
	}
	var paths []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	sort.Strings(paths) // os.ReadDir sorts already; keep the promise explicit
	return paths, nil
}

// Scan calls fn for every record of every segment in dir, segments in
// name order and records in file order. Each call gets a new Record that
// fn may keep. Scan stops at the first error fn returns and returns it.
//
// Segments may be zstd-compressed (any number of frames) or plain JSON
// lines; the format is detected per file. A segment that is still being
// written, or was cut short by a crash, may end in an unfinished zstd
// frame or a partial line; Scan reads what is complete and ignores that
// tail. Corrupt data anywhere else is an error naming the file and line.
func Scan(dir string, fn func(*Record) error) error {
	paths, err := ListSegments(dir)
	if err != nil {
		return err
	}
	var s scanner
	defer s.close()
	for _, p := range paths {
		if err := s.scanFile(p, fn); err != nil {
			return err
		}
	}
	return nil
}

// ScanFile is Scan for one segment file.
func ScanFile(path string, fn func(*Record) error) error {
	var s scanner
	defer s.close()
	return s.scanFile(path, fn)
}

// ReadDir returns all records of the segments in dir, in order. It is
// meant for tests and tools; use Scan for large directories.
func ReadDir(dir string) ([]Record, error) {
	var recs []Record
	err := Scan(dir, func(r *Record) error {
		recs = append(recs, *r)
		return nil
	})
	return recs, err
}

// scanner holds a zstd decoder reused across files.
type scanner struct {
	dec *zstd.Decoder
}

func (s *scanner) close() {
	if s.dec != nil {
		s.dec.Close()
	}
}

// isZstd reports whether b starts with a zstd frame or a skippable frame.
func isZstd(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	if b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd {
		return true
	}
	return b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18
}

func (s *scanner) scanFile(path string, fn func(*Record) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	defer f.Close()

	in := bufio.NewReaderSize(f, 64<<10)
	var r io.Reader = in
	if magic, _ := in.Peek(4); isZstd(magic) {
		if s.dec == nil {
			s.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return fmt.Errorf("logs: set up zstd decoder: %w", err)
			}
		}
		if err := s.dec.Reset(in); err != nil {
			return fmt.Errorf("logs: %s: start zstd decoding: %w", path, err)
		}
		r = s.dec
	}

	lines := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := lines.ReadBytes('\n')
		complete := err == nil
		switch {
		case err == nil, errors.Is(err, io.EOF):
		case err == io.ErrUnexpectedEOF: //nolint:errorlint // wrapped forms report corrupt blocks
			// The zstd input ended inside a frame: the segment is being
			// written or its writer died. What was decoded is complete
			// data. (The decoder wraps io.ErrUnexpectedEOF when a block's
			// content is corrupt; that is an error.)
		default:
			return fmt.Errorf("logs: %s: line %d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			rec := new(Record)
			if uerr := json.Unmarshal(line, rec); uerr != nil {
				if !complete {
					return nil // a partly written last line
				}
				return fmt.Errorf("logs: %s: line %d: %w", path, n, uerr)
			}
			if ferr := fn(rec); ferr != nil {
				return ferr
			}
		}
		if !complete {
			return nil
		}
	}
}
