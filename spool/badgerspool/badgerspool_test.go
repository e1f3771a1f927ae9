package badgerspool_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// testLogger sends log output to t.Log, so it shows only for failing tests.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tLogWriter struct{ t testing.TB }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func openBadger(t testing.TB, dir string) *badgerspool.Spool {
	t.Helper()
	s, err := badgerspool.Open(dir, badgerspool.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenUnusableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "regular-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"file":            file,
		"under a file":    filepath.Join(file, "spool"),
		"deep under file": filepath.Join(file, "a", "b"),
	}
	for name, dir := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := badgerspool.Open(dir, badgerspool.Options{Logger: testLogger(t)})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded", dir)
			}
			if want := "spool: open badger at " + dir + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %q does not start with %q", err, want)
			}
		})
	}
}

func TestOpenUnwritableDir(t *testing.T) {
	// Permissions do not bind root (CI may run as root): root gets a
	// procfs directory, where nobody can create files.
	parent := "/proc/self"
	if os.Geteuid() != 0 {
		parent = t.TempDir()
		if err := os.Chmod(parent, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(parent, 0o700) })
	}
	for _, dir := range []string{parent, filepath.Join(parent, "spool")} {
		s, err := badgerspool.Open(dir, badgerspool.Options{Logger: testLogger(t)})
		if err == nil {
			s.Close()
			t.Fatalf("Open(%s) in a read-only directory succeeded", dir)
		}
		if want := "spool: open badger at " + dir + ": "; !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("error %q does not start with %q", err, want)
		}
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s := openBadger(t, dir)
	defer s.Close()
	s2, err := badgerspool.Open(dir, badgerspool.Options{Logger: testLogger(t)})
	if err == nil {
		s2.Close()
		t.Fatal("second Open on an open directory succeeded")
	}
	if want := "spool: open badger at " + dir + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}

// TestBadgerMessageSizes stores bodies around the value threshold and the
// largest size the spool is meant for, with value-log GC running often.
func TestBadgerMessageSizes(t *testing.T) {
	dir := t.TempDir()
	opts := badgerspool.Options{Logger: testLogger(t), ValueLogGCInterval: 10 * time.Millisecond}
	s, err := badgerspool.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[spool.ID][]byte{}
	for _, n := range []int{64<<10 - 1, 64 << 10, 1 << 20, 20 << 20} {
		v := make([]byte, n)
		for i := range v {
			v[i] = byte(rand.Uint32())
		}
		id := spool.NewID()
		if err := s.Store(ctx, id, v); err != nil {
			t.Fatalf("Store %d bytes: %v", n, err)
		}
		want[id] = v
	}
	// Churn so GC has something to look at while values are read back.
	for range 20 {
		id := spool.NewID()
		if err := s.Store(ctx, id, make([]byte, 256<<10)); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = badgerspool.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for id, v := range want {
		got, err := s.Load(ctx, id)
		if err != nil {
			t.Fatalf("Load %d bytes after reopen: %v", len(v), err)
		}
		if !bytes.Equal(got, v) {
			t.Fatalf("Load %d bytes after reopen: got %d different bytes", len(v), len(got))
		}
	}
}

// TestBadgerDefaultLogIsQuiet checks that opening and closing a spool logs
// nothing at the default settings, and that VerboseLog lets badger talk.
func TestBadgerDefaultLogIsQuiet(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		var buf syncBuffer
		l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s, err := badgerspool.Open(t.TempDir(), badgerspool.Options{Logger: l, VerboseLog: verbose})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Store(context.Background(), spool.NewID(), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		switch {
		case !verbose && out != "":
			t.Errorf("default logging wrote:\n%s", out)
		case verbose && !strings.Contains(out, "lib=badger"):
			t.Errorf("VerboseLog logged nothing from badger; got:\n%s", out)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process-death tests. The parent runs this test binary again as a child
// (selected by -test.run and childEnv) that stores values and reports each
// acknowledged ID on stdout; the child then dies without closing the spool,
// either by os.Exit right after the last Store returns or by SIGKILL from
// the parent while writes are in flight. Every ID the child reported must be
// in the spool afterwards.

const (
	childEnv    = "MTAKIT_SPOOL_CRASH_CHILD" // "exit" or "kill"
	childDirEnv = "MTAKIT_SPOOL_CRASH_DIR"
	childStored = "stored "
	exitAfter   = 200
	killAfter   = 300
)

func TestBadgerCrashChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("helper process for TestBadgerSurvivesProcessDeath")
	}
	// "kill-batch" stores each value and a meta value in one batch on a
	// pair (as mta's reception does); the others Store into one spool.
	var store func(ctx context.Context, id spool.ID) error
	if mode == "kill-batch" {
		data, meta, err := badgerspool.OpenPair(os.Getenv(childDirEnv), badgerspool.Options{})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(2)
		}
		store = func(ctx context.Context, id spool.ID) error {
			return spool.StoreAll(ctx, spool.Write{Spool: data, ID: id, Data: childValue(id)}, spool.Write{Spool: meta, ID: id, Data: []byte(id.String())})
		}
	} else {
		s, err := badgerspool.Open(os.Getenv(childDirEnv), badgerspool.Options{})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(2)
		}
		store = func(ctx context.Context, id spool.ID) error { return s.Store(ctx, id, childValue(id)) }
	}
	var (
		mu    sync.Mutex
		count int
	)
	ctx := context.Background()
	for range 4 {
		go func() {
			for {
				id := spool.NewID()
				if err := store(ctx, id); err != nil {
					fmt.Println("store:", err)
					os.Exit(2)
				}
				mu.Lock()
				// os.Stdout is unbuffered: the line is in the pipe before
				// the process can die.
				fmt.Println(childStored + id.String())
				count++
				if mode == "exit" && count == exitAfter {
					os.Exit(0) // no Close; other Stores are mid-flight
				}
				mu.Unlock()
			}
		}()
	}
	select {} // killed or exits from a writer
}

func childValue(id spool.ID) []byte {
	return bytes.Repeat([]byte(id.String()), 64) // 2 KiB
}

func TestBadgerSurvivesProcessDeath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	for _, mode := range []string{"exit", "kill", "kill-batch"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBadgerCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var acked []spool.ID
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				rest, ok := strings.CutPrefix(line, childStored)
				if !ok {
					t.Logf("child: %s", line)
					continue
				}
				id, err := spool.ParseID(rest)
				if err != nil {
					t.Fatalf("child printed %q: %v", line, err)
				}
				acked = append(acked, id)
				if mode != "exit" && len(acked) == killAfter {
					if err := cmd.Process.Kill(); err != nil {
						t.Fatal(err)
					}
				}
			}
			io.Copy(io.Discard, out)
			err = cmd.Wait()
			switch mode {
			case "exit":
				if err != nil {
					t.Fatalf("child: %v", err)
				}
				if len(acked) != exitAfter {
					t.Fatalf("child acknowledged %d stores, want %d", len(acked), exitAfter)
				}
			default:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || len(acked) < killAfter {
					t.Fatalf("child was not killed after %d stores: %v (%d acknowledged)", killAfter, err, len(acked))
				}
			}

			var s, meta *badgerspool.Spool
			if mode == "kill-batch" {
				var err error
				if s, meta, err = badgerspool.OpenPair(dir, badgerspool.Options{Logger: testLogger(t)}); err != nil {
					t.Fatal(err)
				}
				defer meta.Close()
			} else {
				s = openBadger(t, dir)
			}
			defer s.Close()
			for _, id := range acked {
				got, err := s.Load(context.Background(), id)
				if err != nil {
					t.Fatalf("acknowledged %s lost: %v", id, err)
				}
				if !bytes.Equal(got, childValue(id)) {
					t.Fatalf("acknowledged %s: wrong value (%d bytes)", id, len(got))
				}
				if meta != nil {
					if got, err := meta.Load(context.Background(), id); err != nil || string(got) != id.String() {
						t.Fatalf("acknowledged %s: meta %q, %v", id, got, err)
					}
				}
			}
			n := 0
			if err := s.Enumerate(context.Background(), func(spool.ID, []byte) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d acknowledged, %d in spool after %s", len(acked), n, mode)
		})
	}
}
