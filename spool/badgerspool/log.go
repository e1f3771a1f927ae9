package badgerspool

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
)

// badgerLogger adapts badger.Logger to slog. Badger logs a lot at INFO
// (table counts, compaction progress), so unless verbose is set only
// warnings and errors get through.
type badgerLogger struct {
	l       *slog.Logger
	verbose bool

	// syncFailure holds the first value-log sync error badger reported.
	// Badger v4 logs a failed vlog sync at the end of a write instead of
	// returning it to the committer (value.go, valueLog.write: "Error while
	// curlf sync"), so the log is the only place the failure is visible.
	// Badger.commit checks it after every commit so that a write whose body
	// may not be on disk is never acknowledged.
	syncFailure atomic.Pointer[string]
}

// vlogSyncFailurePrefix is the start of the format string badger v4 uses
// for the swallowed value-log sync error; see badgerLogger.syncFailure.
const vlogSyncFailurePrefix = "Error while curlf sync"

func (b *badgerLogger) Errorf(format string, args ...any) {
	msg := b.format(format, args)
	if strings.HasPrefix(format, vlogSyncFailurePrefix) {
		b.syncFailure.CompareAndSwap(nil, &msg)
	}
	b.l.Error(msg)
}

func (b *badgerLogger) Warningf(format string, args ...any) {
	b.l.Warn(b.format(format, args))
}

func (b *badgerLogger) Infof(format string, args ...any) {
	if b.verbose {
		b.l.Info(b.format(format, args))
	}
}

func (b *badgerLogger) Debugf(format string, args ...any) {
	// Checking Enabled first avoids formatting the many per-write debug
	// messages badger emits when nobody will see them.
	if b.verbose && b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(b.format(format, args))
	}
}

// format renders a badger message; badger's formats often end in "\n",
// which slog handlers would print verbatim.
func (b *badgerLogger) format(format string, args []any) string {
	return strings.TrimRight(fmt.Sprintf(format, args...), "\n ")
}
