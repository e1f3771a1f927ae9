package mta_test

import (
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// With LocalConfig.SyncReception, a message's Reception record is in the
// log (readable from the open segment) when the client gets its 250,
// although the log never flushes on its own (FlushInterval < 0).
func TestDurableReceptionRecordBefore250(t *testing.T) {
	dir := t.TempDir()
	local, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir, SyncReception: true, FlushInterval: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) { o.Log = local })
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	for i := range 5 {
		ids := sendMail(t, rc, "a@example.com", []string{"r1@example.net", "r2@example.net"}, testMessage("durable", "body"))
		recs, err := logs.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, r := range recs {
			if r.Type == logs.Reception {
				have[r.ID] = true
			}
		}
		for _, id := range ids {
			if !have[id] {
				t.Fatalf("transaction %d: no Reception record for %s in the log when 250 was sent", i, id)
			}
		}
	}
}

// Without it, the same log holds nothing yet: the records wait in the
// compressor's buffer (this is what the mode changes).
func TestReceptionRecordBufferedByDefault(t *testing.T) {
	dir := t.TempDir()
	local, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir, FlushInterval: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), func(o *mta.Options, _ *listener.Config) { o.Log = local })
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	sendMail(t, rc, "a@example.com", []string{"r1@example.net"}, testMessage("buffered", "body"))
	if recs, err := logs.ReadDir(dir); err != nil || len(recs) != 0 {
		t.Fatalf("ReadDir = %d records, %v; want none before a flush", len(recs), err)
	}
}

// failingSync is a log whose Sync fails while fail is set, as an fsync
// on a failing disk does; records still reach the real log below.
type failingSync struct {
	*logs.Local
	fail  atomic.Bool
	syncs atomic.Int32
}

func (f *failingSync) Sync(t logs.RecordType) error {
	f.syncs.Add(1)
	if f.fail.Load() {
		return &logs.WriteError{Path: "segment", Records: 1, Failures: 1, Err: syscall.EIO}
	}
	return f.Local.Sync(t)
}

// When the Reception records cannot be made durable, the transaction gets
// 451 and its messages leave the spool (the client retries; nothing is
// acknowledged without its record). Once the log works again, mail is
// accepted.
func TestDurableReceptionLogFailureRefuses(t *testing.T) {
	local, err := logs.OpenLocal(logs.LocalConfig{LogDir: t.TempDir(), SyncReception: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sink := &failingSync{Local: local}
	sink.fail.Store(true)
	data, meta := spool.NewMemory(), spool.NewMemory()
	ts := startServer(t, data, meta, func(o *mta.Options, _ *listener.Config) { o.Log = sink })
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	rc.expectCmd("MAIL FROM:<a@example.com>", 250)
	rc.expectCmd("RCPT TO:<r1@example.net>", 250)
	rc.expectCmd("RCPT TO:<r2@example.net>", 250)
	rc.expectCmd("DATA", 354)
	rc.send(testMessage("refused", "body") + ".\r\n")
	if code, text := rc.reply(); code != 451 {
		t.Fatalf("reply %d %q with a failing log sync, want 451", code, text)
	}
	if sink.syncs.Load() != 1 {
		t.Errorf("%d Sync calls for one transaction, want 1", sink.syncs.Load())
	}
	if n, m := countSpool(t, data), countSpool(t, meta); n != 0 || m != 0 || ts.srv.QueuedCount() != 0 {
		t.Fatalf("after the 451: %d data, %d meta entries, %d queued; want none", n, m, ts.srv.QueuedCount())
	}

	sink.fail.Store(false)
	ids := sendMail(t, rc, "a@example.com", []string{"r1@example.net"}, testMessage("accepted", "body"))
	if len(ids) != 1 || ts.srv.QueuedCount() != 1 {
		t.Fatalf("after recovery: ids %v, %d queued; want one message accepted", ids, ts.srv.QueuedCount())
	}
}
