package logs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestLocalRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		cfg      LocalConfig
		wantZstd bool
	}{
		{name: "zstd default level", cfg: LocalConfig{}, wantZstd: true},
		{name: "zstd level 1", cfg: LocalConfig{CompressionLevel: 1}, wantZstd: true},
		{name: "zstd level 19", cfg: LocalConfig{CompressionLevel: 19}, wantZstd: true},
		{name: "plain", cfg: LocalConfig{Uncompressed: true}},
		{name: "zstd with suffix", cfg: LocalConfig{Suffix: ".log"}, wantZstd: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := tc.cfg
			cfg.LogDir = dir
			l := openLocal(t, cfg)
			recs := makeRecords(200)
			logAll(t, l, recs)
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			paths := segments(t, dir)
			if len(paths) != 1 {
				t.Fatalf("got %d segments, want 1: %v", len(paths), paths)
			}
			name := baseName(paths[0])
			if !segmentNameRE.MatchString(name) || !strings.HasSuffix(name, cfg.Suffix) {
				t.Errorf("segment name %q does not look like %%Y%%m%%d-%%H%%M%%S%%.f%s", name, cfg.Suffix)
			}
			if !isDone(t, paths[0]) {
				t.Errorf("segment %s still writable after Close", name)
			}
			raw, err := os.ReadFile(paths[0])
			if err != nil {
				t.Fatal(err)
			}
			if got := isZstd(raw); got != tc.wantZstd {
				t.Errorf("zstd magic present = %v, want %v", got, tc.wantZstd)
			}
			if !tc.wantZstd && !bytes.HasPrefix(raw, []byte(`{"type":"Reception"`)) {
				t.Errorf("plain segment starts with %q", raw[:min(40, len(raw))])
			}

			got, err := ReadDir(dir)
			if err != nil {
				t.Fatalf("ReadDir: %v", err)
			}
			if len(got) != len(recs) {
				t.Fatalf("read %d records, want %d", len(got), len(recs))
			}
			for i, r := range recs {
				if want := wireForm(t, r); !reflect.DeepEqual(got[i], want) {
					t.Fatalf("record %d:\n got %s\nwant %s", i, mustJSON(t, got[i]), mustJSON(t, want))
				}
			}
		})
	}
}

func TestLocalRotationBySize(t *testing.T) {
	const maxSize = 4000
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("uncompressed=%v", plain), func(t *testing.T) {
			dir := t.TempDir()
			l := openLocal(t, LocalConfig{LogDir: dir, MaxFileSize: maxSize, Uncompressed: plain})
			recs := makeRecords(300)
			logAll(t, l, recs)
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			paths := segments(t, dir)
			if len(paths) < 10 {
				t.Fatalf("got %d segments, want many with MaxFileSize=%d", len(paths), maxSize)
			}
			for i, p := range paths {
				if !isDone(t, p) {
					t.Errorf("segment %s still writable", baseName(p))
				}
				data := segmentBytes(t, p)
				if !bytes.HasSuffix(data, []byte("\n")) {
					t.Errorf("segment %s does not end at a record boundary", baseName(p))
				}
				if i == len(paths)-1 {
					continue
				}
				// KumoMTA rotates after the record that reaches the limit.
				last := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
				if len(data) < maxSize || last >= maxSize {
					t.Errorf("segment %s: %d bytes, last record starts at %d; want the record crossing %d to be last",
						baseName(p), len(data), last, maxSize)
				}
			}

			var n int
			err := Scan(dir, func(r *Record) error {
				if want := recs[n].ID; r.ID != want {
					return fmt.Errorf("record %d has id %s, want %s", n, r.ID, want)
				}
				n++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != len(recs) {
				t.Fatalf("read %d records, want %d", n, len(recs))
			}
		})
	}
}

func TestLocalRotationByDuration(t *testing.T) {
	dir := t.TempDir()
	const d = 150 * time.Millisecond
	l := openLocal(t, LocalConfig{LogDir: dir, MaxSegmentDuration: d})

	start := time.Now()
	if err := l.Log(receptionRecord(1)); err != nil {
		t.Fatal(err)
	}
	// No further records: the idle segment must be closed by the timer.
	waitFor(t, 5*time.Second, "idle segment to be closed", func() bool {
		p := segments(t, dir)
		return len(p) == 1 && isDone(t, p[0])
	})
	if el := time.Since(start); el < d {
		t.Errorf("segment closed after %s, before MaxSegmentDuration %s", el, d)
	}
	got, err := ReadDir(dir)
	if err != nil || len(got) != 1 {
		t.Fatalf("ReadDir after expiry = %d records, %v; want 1", len(got), err)
	}

	if err := l.Log(receptionRecord(2)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	paths := segments(t, dir)
	if len(paths) != 2 {
		t.Fatalf("got %d segments, want 2", len(paths))
	}
	got, err = ReadDir(dir)
	if err != nil || len(got) != 2 || got[0].ID != receptionRecord(1).ID || got[1].ID != receptionRecord(2).ID {
		t.Fatalf("ReadDir = %d records, %v; want records 1 and 2 in order", len(got), err)
	}
}

func TestLocalConcurrentLog(t *testing.T) {
	const goroutines, perG = 16, 400
	dir := t.TempDir()
	// Tiny BackPressure so producers block on the writer; small segments
	// so rotation happens under concurrency.
	l := openLocal(t, LocalConfig{LogDir: dir, BackPressure: 8, MaxFileSize: 64 << 10})

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				r := receptionRecord(g*perG + i)
				r.Meta = map[string]any{"g": float64(g), "i": float64(i)}
				if err := l.Log(r); err != nil {
					t.Errorf("Log: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	next := make([]int, goroutines)
	total := 0
	err := Scan(dir, func(r *Record) error {
		g, i := int(r.Meta["g"].(float64)), int(r.Meta["i"].(float64))
		if i != next[g] {
			return fmt.Errorf("goroutine %d: got record %d, want %d", g, i, next[g])
		}
		next[g]++
		total++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != goroutines*perG {
		t.Fatalf("read %d records, want %d", total, goroutines*perG)
	}
	if n := len(segments(t, dir)); n < 2 {
		t.Errorf("got %d segments, want rotation to have happened", n)
	}
}

func TestOpenLocalErrors(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "plainfile")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	readOnly := unwritableDir(t)
	tests := []struct {
		name string
		cfg  LocalConfig
		want string // substring of the error
	}{
		{name: "empty dir", cfg: LocalConfig{}, want: "LogDir is empty"},
		{name: "dir below a file", cfg: LocalConfig{LogDir: filepath.Join(file, "logs")},
			want: fmt.Sprintf("create log directory %q", filepath.Join(file, "logs"))},
		{name: "dir is a file", cfg: LocalConfig{LogDir: file},
			want: fmt.Sprintf("create log directory %q", file)},
		{name: "read-only dir", cfg: LocalConfig{LogDir: readOnly},
			want: fmt.Sprintf("log directory %q is not writable", readOnly)},
		{name: "negative size", cfg: LocalConfig{LogDir: tmp, MaxFileSize: -1}, want: "MaxFileSize is negative"},
		{name: "negative back pressure", cfg: LocalConfig{LogDir: tmp, BackPressure: -1}, want: "BackPressure is negative"},
		{name: "negative duration", cfg: LocalConfig{LogDir: tmp, MaxSegmentDuration: -time.Second}, want: "MaxSegmentDuration is negative"},
		{name: "suffix with slash", cfg: LocalConfig{LogDir: tmp, Suffix: "a/b"}, want: "path separator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := OpenLocal(tc.cfg)
			if err == nil {
				l.Close()
				t.Fatalf("OpenLocal succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// unwritableDir returns an existing directory the test process cannot
// create files in. Permissions do not bind root (CI may run as root), so
// root gets a directory of procfs, where nobody can create files.
func unwritableDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/proc/self"); err != nil {
			t.Skip("running as root without /proc: no unwritable directory")
		}
		return "/proc/self"
	}
	dir := filepath.Join(t.TempDir(), "readonly")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLocalCreatesMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "logs")
	l := openLocal(t, LocalConfig{LogDir: dir})
	logAll(t, l, makeRecords(3))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadDir(dir); err != nil || len(got) != 3 {
		t.Fatalf("ReadDir = %d records, %v", len(got), err)
	}
	// The writability probe leaves nothing behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("stray hidden file %s", e.Name())
		}
	}
}

func TestLocalClose(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, LocalConfig{LogDir: dir})
	logAll(t, l, makeRecords(5))

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = l.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close #%d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	if err := l.Log(receptionRecord(9)); !errors.Is(err, ErrClosed) {
		t.Errorf("Log after Close = %v, want ErrClosed", err)
	}
	if err := l.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	if got, err := ReadDir(dir); err != nil || len(got) != 5 {
		t.Fatalf("ReadDir = %d records, %v; want 5", len(got), err)
	}

	// Closing a sink that never logged creates no segment.
	empty := t.TempDir()
	l2 := openLocal(t, LocalConfig{LogDir: empty})
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if p := segments(t, empty); len(p) != 0 {
		t.Errorf("segments after empty Close: %v", p)
	}
}

func TestLocalLogNil(t *testing.T) {
	l := openLocal(t, LocalConfig{LogDir: t.TempDir()})
	if err := l.Log(nil); err == nil {
		t.Fatal("Log(nil) succeeded")
	}
}

func TestLocalFlushMakesInProgressSegmentReadable(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("uncompressed=%v", plain), func(t *testing.T) {
			dir := t.TempDir()
			l := openLocal(t, LocalConfig{LogDir: dir, Uncompressed: plain})
			logAll(t, l, makeRecords(10))
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			paths := segments(t, dir)
			if len(paths) != 1 || isDone(t, paths[0]) {
				t.Fatalf("want one in-progress (writable) segment, got %v", paths)
			}
			got, err := ReadDir(dir)
			if err != nil || len(got) != 10 {
				t.Fatalf("ReadDir of in-progress segment = %d records, %v; want 10", len(got), err)
			}
		})
	}
}

func TestLocalFlushInterval(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, LocalConfig{LogDir: dir, FlushInterval: 50 * time.Millisecond})
	logAll(t, l, makeRecords(3))
	waitFor(t, 5*time.Second, "records to reach the file", func() bool {
		got, err := ReadDir(dir)
		return err == nil && len(got) == 3
	})
}

func TestLocalMarksExistingSegmentsDone(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "20200101-000000.123")
	hidden := filepath.Join(dir, ".checkpoint")
	for _, p := range []string{stale, hidden} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := openLocal(t, LocalConfig{LogDir: dir})
	defer l.Close()
	if !isDone(t, stale) {
		t.Error("segment left by an earlier process is still writable")
	}
	if isDone(t, hidden) {
		t.Error("hidden file was marked done")
	}
}

func TestLocalOutputEncoding(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, LocalConfig{LogDir: dir, Uncompressed: true})
	r := &Record{
		Type:      Delivery,
		ID:        "abc",
		Recipient: Recipients{"a@example.com"},
		Response:  Response{Code: 250, Content: "2.0.0 <queued> as\r\n12 & done"},
	}
	if err := l.Log(r); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	paths := segments(t, dir)
	line := string(segmentBytes(t, paths[0]))
	for _, want := range []string{
		`"content":"2.0.0 <queued> as 12 & done"`, // single line, no HTML escaping
		`"meta":{}`, `"headers":{}`,
		`"bounce_classification":"Uncategorized"`,
		`"recipient":"a@example.com"`,
		`"feedback_report":null`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %s:\n%s", want, line)
		}
	}
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "}\n") {
		t.Errorf("want exactly one JSON line, got %q", line)
	}
	// The caller's record is not modified.
	if r.Meta != nil || r.BounceClassification != "" || !strings.Contains(r.Response.Content, "\r\n") {
		t.Errorf("Log modified its argument: %+v", r)
	}
}

// failingFile passes writes to the real segment file until fail is set,
// then fails them as a full disk would.
type failingFile struct {
	f    *os.File
	fail *atomic.Bool
}

func (f *failingFile) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, &os.PathError{Op: "write", Path: f.f.Name(), Err: syscall.ENOSPC}
	}
	return f.f.Write(p)
}

func (f *failingFile) Close() error { return f.f.Close() }

func TestLocalWriteErrors(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("uncompressed=%v", plain), func(t *testing.T) {
			dir := t.TempDir()
			var fail atomic.Bool
			var logBuf bytes.Buffer
			var logMu sync.Mutex
			cfg := LocalConfig{
				LogDir:       dir,
				Uncompressed: plain,
				Logger:       slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, nil)),
			}
			cfg.openFile = func(path string) (io.WriteCloser, error) {
				f, err := createSegmentFile(path)
				if err != nil {
					return nil, err
				}
				return &failingFile{f: f.(*os.File), fail: &fail}, nil
			}
			l := openLocal(t, cfg)

			logAll(t, l, makeRecords(5))
			if err := l.Flush(); err != nil {
				t.Fatalf("Flush before the failure: %v", err)
			}
			fail.Store(true)
			logAll(t, l, makeRecords(3))
			err := l.Flush()
			var we *WriteError
			if !errors.As(err, &we) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Flush during failure = %v, want *WriteError wrapping ENOSPC", err)
			}
			if we.Records != 3 || !strings.HasPrefix(we.Path, dir) {
				t.Errorf("WriteError = %+v, want 3 records in a segment of %s", we, dir)
			}
			if err := l.Flush(); err != nil {
				t.Errorf("failure reported twice: %v", err)
			}
			logMu.Lock()
			logged := logBuf.String()
			logMu.Unlock()
			if !strings.Contains(logged, "write failed") || !strings.Contains(logged, "no space left") {
				t.Errorf("failure not logged via slog; log: %q", logged)
			}

			// The disk recovers: later records go to a new segment.
			fail.Store(false)
			later := receptionRecord(100)
			if err := l.Log(later); err != nil {
				t.Fatalf("Log after recovery: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("Close after recovery: %v", err)
			}
			paths := segments(t, dir)
			if len(paths) != 2 {
				t.Fatalf("got %d segments, want the failed one and a new one", len(paths))
			}
			for _, p := range paths {
				if !isDone(t, p) {
					t.Errorf("segment %s left writable", baseName(p))
				}
			}
			got, err := ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 6 || got[5].ID != later.ID {
				t.Fatalf("read %d records; want the 5 flushed before the failure and the one after", len(got))
			}
		})
	}
}

func TestLocalErrorReturnedByLogAndClose(t *testing.T) {
	dir := t.TempDir()
	gate := make(chan struct{})
	cfg := LocalConfig{LogDir: dir, Uncompressed: true, Logger: slog.New(slog.DiscardHandler)}
	cfg.openFile = func(path string) (io.WriteCloser, error) {
		<-gate
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EACCES}
	}
	l := openLocal(t, cfg)
	if err := l.Log(receptionRecord(1)); err != nil {
		t.Fatalf("first Log: %v", err)
	}
	gate <- struct{}{} // let the writer fail on record 1
	waitFor(t, 5*time.Second, "the writer to fail", l.hasErr.Load)

	// The next Log reports the failure (its own record is queued).
	err := l.Log(receptionRecord(2))
	var we *WriteError
	if !errors.As(err, &we) || !errors.Is(err, syscall.EACCES) || we.Records != 1 {
		t.Fatalf("Log after failure = %v, want *WriteError for 1 record wrapping EACCES", err)
	}
	// Record 2 fails while Close drains it; Close reports that.
	close(gate)
	err = l.Close()
	if !errors.As(err, &we) || !errors.Is(err, syscall.EACCES) || we.Records != 1 {
		t.Fatalf("Close = %v, want *WriteError for record 2", err)
	}
	if p := segments(t, dir); len(p) != 0 {
		t.Errorf("segments = %v, want none", p)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestZstdCLIReadsSegments(t *testing.T) {
	zstdPath, err := exec.LookPath("zstd")
	if err != nil {
		t.Skip("zstd CLI not installed")
	}
	dir := t.TempDir()
	l := openLocal(t, LocalConfig{LogDir: dir, MaxFileSize: 50_000})
	recs := makeRecords(300)
	logAll(t, l, recs)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var n int
	for _, p := range segments(t, dir) {
		out, err := exec.Command(zstdPath, "-d", "-c", p).Output()
		if err != nil {
			t.Fatalf("zstd -d %s: %v", p, err)
		}
		for line := range strings.Lines(string(out)) {
			var r Record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("zstd output line %d: %v", n, err)
			}
			if r.ID != recs[n].ID {
				t.Fatalf("record %d: id %s, want %s", n, r.ID, recs[n].ID)
			}
			n++
		}
		// zstd -t verifies the frame checksum.
		if out, err := exec.Command(zstdPath, "-t", "-q", p).CombinedOutput(); err != nil {
			t.Fatalf("zstd -t %s: %v: %s", p, err, out)
		}
	}
	if n != len(recs) {
		t.Fatalf("zstd CLI decoded %d records, want %d", n, len(recs))
	}
}

func TestSegmentName(t *testing.T) {
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		t      time.Time
		suffix string
		want   string
	}{
		{base, "", "20240102-030405"},
		{base.Add(120 * time.Millisecond), "", "20240102-030405.120"},
		{base.Add(123456 * time.Microsecond), "", "20240102-030405.123456"},
		{base.Add(123456789), "", "20240102-030405.123456789"},
		{base.Add(1), "", "20240102-030405.000000001"},
		{base.Add(999 * time.Millisecond), ".bounce", "20240102-030405.999.bounce"},
		{base.In(time.FixedZone("EST", -5*3600)), "", "20240102-030405"},
	}
	for _, tc := range tests {
		if got := SegmentName(tc.t, tc.suffix); got != tc.want {
			t.Errorf("SegmentName(%s, %q) = %q, want %q", tc.t, tc.suffix, got, tc.want)
		}
	}
	// Names sort in time order whatever their number of digits.
	times := []time.Time{base, base.Add(1), base.Add(1000), base.Add(time.Millisecond),
		base.Add(time.Millisecond + 1), base.Add(time.Second - 1), base.Add(time.Second)}
	for i := 1; i < len(times); i++ {
		a, b := SegmentName(times[i-1], ""), SegmentName(times[i], "")
		if a >= b {
			t.Errorf("%q sorts after %q", a, b)
		}
	}
}

func TestSegmentNamesStrictlyIncrease(t *testing.T) {
	dir := t.TempDir()
	// One record per segment: names are generated faster than the clock
	// may tick.
	l := openLocal(t, LocalConfig{LogDir: dir, MaxFileSize: 1})
	recs := makeRecords(50)
	logAll(t, l, recs)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	paths := segments(t, dir)
	if len(paths) != len(recs) {
		t.Fatalf("got %d segments, want %d", len(paths), len(recs))
	}
	got, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if got[i].ID != recs[i].ID {
			t.Fatalf("record %d out of order", i)
		}
	}
}

func TestLocalBackPressureBlocksWithoutDropping(t *testing.T) {
	dir := t.TempDir()
	gate := make(chan struct{})
	cfg := LocalConfig{LogDir: dir, BackPressure: 2}
	cfg.openFile = func(path string) (io.WriteCloser, error) {
		<-gate // a stalled disk
		return createSegmentFile(path)
	}
	l := openLocal(t, cfg)

	const n = 10
	var accepted atomic.Int32
	done := make(chan error, 1)
	go func() {
		for _, r := range makeRecords(n) {
			if err := l.Log(r); err != nil {
				done <- err
				return
			}
			accepted.Add(1)
		}
		done <- nil
	}()
	// While the writer is stalled, at most one taken batch plus
	// BackPressure records are accepted.
	time.Sleep(100 * time.Millisecond)
	if got := accepted.Load(); got > 4 {
		t.Fatalf("%d records accepted while the writer was stalled, want Log to block", got)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDir(dir)
	if err != nil || len(got) != n {
		t.Fatalf("ReadDir = %d records, %v; want all %d", len(got), err, n)
	}
}

// By default a record reaches its segment file within FlushInterval (1s),
// while the segment is still open: what a crash can lose is bounded, and
// a person watching the logs sees records soon.
func TestDefaultFlushInterval(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, LocalConfig{LogDir: dir})
	defer l.Close()
	logAll(t, l, makeRecords(3))
	deadline := time.Now().Add(2 * time.Second)
	for {
		recs, err := ReadDir(dir)
		if err == nil && len(recs) == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2s the open segment holds %d of 3 records (%v)", len(recs), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
