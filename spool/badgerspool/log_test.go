package badgerspool

import (
	"context"
	"github.com/mtakit/mtakit/spool"
	"log/slog"
	"strings"
	"testing"
)

type recordingHandler struct{ records []slog.Record }

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func TestBadgerLoggerLevels(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		h := &recordingHandler{}
		l := &badgerLogger{l: slog.New(h), verbose: verbose}
		l.Errorf("e %d\n", 1)
		l.Warningf("w %d\n", 2)
		l.Infof("i %d\n", 3)
		l.Debugf("d %d\n", 4)
		var got []string
		for _, r := range h.records {
			got = append(got, r.Level.String()+":"+r.Message)
		}
		want := "ERROR:e 1,WARN:w 2"
		if verbose {
			want += ",INFO:i 3,DEBUG:d 4"
		}
		if s := strings.Join(got, ","); s != want {
			t.Errorf("verbose=%v: logged %s, want %s", verbose, s, want)
		}
		if l.syncFailure.Load() != nil {
			t.Errorf("ordinary error recorded as sync failure")
		}
	}
}

func TestBadgerLoggerRecordsSyncFailure(t *testing.T) {
	l := &badgerLogger{l: slog.New(&recordingHandler{})}
	l.Errorf(vlogSyncFailurePrefix+": %v\n", "input/output error")
	l.Errorf(vlogSyncFailurePrefix+": %v\n", "second")
	msg := l.syncFailure.Load()
	if msg == nil || !strings.Contains(*msg, "input/output error") {
		t.Fatalf("sync failure not recorded (first one kept): %v", msg)
	}
}

func TestBadgerRefusesWritesAfterSyncFailure(t *testing.T) {
	b, err := Open(t.TempDir(), Options{Logger: slog.New(&recordingHandler{})})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if err := b.Store(ctx, spool.NewID(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	// What badger's value log does when its msync fails.
	b.e.blog.Errorf(vlogSyncFailurePrefix+": %v\n", "input/output error")
	for range 2 {
		err := b.Store(ctx, spool.NewID(), []byte("after"))
		if err == nil || !strings.Contains(err.Error(), "input/output error") {
			t.Fatalf("Store after a value log sync failure = %v, want it refused", err)
		}
	}
}
