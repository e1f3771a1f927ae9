package mta_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/metrics"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// lockedBuffer collects slog output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.b.String(), s)
}

// scrape returns the text of a metrics handler.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func liveness(t *testing.T, api http.Handler) int {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/check-liveness/v1", nil)
	req.RemoteAddr = "127.0.0.1:1234"
	api.ServeHTTP(rec, req)
	return rec.Code
}

// greeting dials the listener and returns its first reply line, and
// whether the server then closed the connection.
func greeting(t *testing.T, addr string) (string, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	// A refused connection is closed at once; an accepted one waits for
	// a command (the read times out).
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = r.ReadByte()
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	return strings.TrimSpace(line), err != nil && !timedOut
}

// Over the soft limit the server sheds load as KumoMTA does: new
// connections get "421 4.3.2 <host> load shedding", open sessions 451
// 4.3.2 at MAIL FROM, Inject and the HTTP API refuse, check-liveness
// answers 503; the caches are purged, the change is logged once and
// exported as metrics. When usage is under the limit again, mail is
// accepted. The limits are changed at run time (SetMemoryLimits), so the
// test does not depend on the machine's memory.
func TestMemoryLoadShedding(t *testing.T) {
	var logs lockedBuffer
	sh, err := shaping.Load(context.Background(), shaping.Options{}, shaping.File{Name: "shaping.toml", Data: []byte("[\"default\"]\nmax_ready = 10\n")})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.Shaper = sh
		o.MemorySoftLimit = 1 << 62       // never, until the test lowers it
		o.MemoryCheckInterval = time.Hour // only the test's checks
	})
	srv := ts.srv
	if st := srv.MemoryStatus(); st.State != mta.MemoryNormal || !st.Enabled || st.Usage <= 0 {
		t.Fatalf("initial status %+v, want enabled, normal, with a usage sample", st)
	}
	m := metrics.New()
	m.Watch(srv)
	api, err := httpapi.New(httpapi.Config{Server: srv, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}

	// Fill a real cache (the shaper's) and one of the test's own.
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		if _, err := sh.PathConfig(context.Background(), "src", d, d); err != nil {
			t.Fatal(err)
		}
	}
	var testCachePurges int
	srv.RegisterCache("test", func() int { testCachePurges++; return 7 })

	open := dialRaw(t, ts.addr) // a session opened before the shedding
	ehlo(open)

	st := srv.SetMemoryLimits(mta.MemoryLimits{Soft: 1})
	if st.State != mta.MemoryOverSoftLimit || st.OverLimit != 1 || st.Limits.Soft != 1 {
		t.Fatalf("status over the soft limit: %+v", st)
	}
	if testCachePurges != 1 || st.Purged < 3+7 {
		t.Errorf("purges: test cache %d, %d entries in all; want the test cache once and the shaper's 3 entries too", testCachePurges, st.Purged)
	}
	if n := sh.PurgeCache(); n != 0 {
		t.Errorf("the shaper's cache still held %d entries after the purge", n)
	}
	for range 3 {
		srv.CheckMemory()
	}
	if n := logs.count("memory usage over the soft limit"); n != 1 {
		t.Errorf("the change was logged %d times, want once", n)
	}
	if testCachePurges != 1 {
		t.Errorf("caches purged %d times within the purge interval, want once", testCachePurges)
	}

	line, closed := greeting(t, ts.addr)
	if line != "421 4.3.2 mx.test load shedding. Try later" || !closed {
		t.Fatalf("new connection got %q (closed %v), want KumoMTA's 421 4.3.2 load shedding and a close", line, closed)
	}
	if code, text := open.cmd("MAIL FROM:<a@example.com>"); code != 451 || !strings.HasPrefix(text, "4.3.2") {
		t.Fatalf("MAIL FROM in an open session: %d %q, want 451 4.3.2", code, text)
	}
	if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "a@example.com", Recipients: []string{"r@example.net"}, Data: []byte("Subject: x\r\n\r\nx\r\n")}); !errors.Is(err, mta.ErrLoadShedding) {
		t.Fatalf("Inject while shedding: %v, want ErrLoadShedding", err)
	}
	if !errors.Is(srv.Live(), mta.ErrLoadShedding) || liveness(t, api) != 503 {
		t.Fatalf("Live %v, check-liveness %d; want ErrLoadShedding and 503", srv.Live(), liveness(t, api))
	}
	text := scrape(t, m.Handler())
	for _, want := range []string{
		"mtakit_memory_state 2", "mtakit_memory_over_limit_total 1", "mtakit_memory_refused_total 3",
		`mtakit_memory_limit_bytes{limit="soft"} 1`, "mtakit_memory_cache_purged_total",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if ts.srv.QueuedCount() != 0 {
		t.Fatalf("%d messages queued while shedding", ts.srv.QueuedCount())
	}

	// Usage falls under the limit (here: the limit rises): mail flows.
	st = srv.SetMemoryLimits(mta.MemoryLimits{Soft: 1 << 62})
	if st.State != mta.MemoryNormal {
		t.Fatalf("status after raising the limit: %+v", st)
	}
	if n := logs.count("under the soft limit again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once", n)
	}
	if line, closed := greeting(t, ts.addr); !strings.HasPrefix(line, "220 ") || closed {
		t.Fatalf("new connection after recovery got %q (closed %v), want 220", line, closed)
	}
	sendMail(t, open, "a@example.com", []string{"r@example.net"}, testMessage("after", "body"))
	if ts.srv.QueuedCount() != 1 || srv.Live() != nil || liveness(t, api) != 200 {
		t.Fatalf("after recovery: %d queued, Live %v, check-liveness %d", ts.srv.QueuedCount(), srv.Live(), liveness(t, api))
	}
	if !strings.Contains(scrape(t, m.Handler()), "mtakit_memory_state 0") {
		t.Error("metrics do not show the normal state after recovery")
	}
}

// Between the low threshold and the soft limit the state is "low": mail
// is accepted, the change is logged.
func TestMemoryLowThreshold(t *testing.T) {
	var logs lockedBuffer
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.MemoryLowThresh = 1
		o.MemorySoftLimit = 1 << 62
		o.MemoryCheckInterval = time.Hour
	})
	st := ts.srv.MemoryStatus()
	if st.State != mta.MemoryLow || st.Limits.LowThresh != 1 {
		t.Fatalf("status %+v, want low", st)
	}
	if logs.count("over the low threshold") != 1 {
		t.Error("the low state was not logged once")
	}
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	sendMail(t, rc, "a@example.com", []string{"r@example.net"}, testMessage("low", "body"))
}

// A soft limit set in Options below any real usage sheds load from the
// start; the default limits follow KumoMTA's ratios; a negative soft
// limit disables the monitor.
func TestMemoryMonitorOptions(t *testing.T) {
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.MemoryHardLimit = 8 << 30
		o.MemorySoftLimit = 1
		o.MemoryCheckInterval = 20 * time.Millisecond
	})
	if line, _ := greeting(t, ts.addr); !strings.HasPrefix(line, "421 4.3.2 ") {
		t.Fatalf("greeting %q with a 1-byte soft limit, want 421 4.3.2", line)
	}
	d := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.MemoryHardLimit = 1000 << 20
	})
	if l := d.srv.MemoryStatus().Limits; l.Soft != 750<<20 || l.LowThresh != 600<<20 {
		t.Errorf("limits from a 1000 MiB hard limit: %+v, want soft 750 MiB and low 600 MiB", l)
	}
	off := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.MemorySoftLimit = -1
	})
	if st := off.srv.MemoryStatus(); st.Enabled || st.State != mta.MemoryNormal {
		t.Errorf("disabled monitor: %+v", st)
	}
}

// The periodic sampler follows real usage: memory allocated beyond the
// soft limit makes the server shed load within a few samples, and once
// it is freed and returned to the system, mail is accepted again.
func TestMemoryMonitorSamplesRealUsage(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow memory is not returned to the system")
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) {
		o.MemorySoftLimit = 1 << 62
		o.MemoryCheckInterval = 20 * time.Millisecond
	})
	srv := ts.srv
	runtime.GC()
	debug.FreeOSMemory()
	base := srv.CheckMemory().Usage
	if st := srv.SetMemoryLimits(mta.MemoryLimits{Soft: base + 128<<20}); st.State != mta.MemoryNormal {
		t.Fatalf("status with 128 MiB of headroom: %+v", st)
	}
	waitState := func(want mta.MemoryState) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for srv.MemoryStatus().State != want {
			if time.Now().After(deadline) {
				t.Fatalf("state %v (usage %d MiB, soft limit %d MiB), want %v", srv.MemoryStatus().State, srv.MemoryStatus().Usage>>20, (base+128<<20)>>20, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ballast := make([]byte, 384<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1 // make the pages resident
	}
	waitState(mta.MemoryOverSoftLimit)
	if line, _ := greeting(t, ts.addr); !strings.HasPrefix(line, "421 4.3.2 ") {
		t.Fatalf("greeting %q over the soft limit, want 421 4.3.2", line)
	}
	runtime.KeepAlive(ballast)
	ballast = nil
	runtime.GC()
	debug.FreeOSMemory()
	waitState(mta.MemoryNormal)
	if line, _ := greeting(t, ts.addr); !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q after the memory was freed, want 220", line)
	}
}
