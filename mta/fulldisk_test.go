package mta_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// smallDisk mounts a tmpfs of size MiB at a new directory, or skips the
// test where mounting is not allowed (it needs root).
func smallDisk(t *testing.T, mib int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(mib)+"m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fillTo writes a filler file until freePercent of the filesystem is
// left, and returns its path.
func fillTo(t *testing.T, dir string, freePercent uint64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	total := st.Blocks * uint64(st.Bsize)
	avail := st.Bavail * uint64(st.Bsize)
	want := total * freePercent / 100
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for n := avail - want; n > 0; {
		w := min(n, uint64(len(chunk)))
		if _, err := f.Write(chunk[:w]); err != nil {
			break // full
		}
		n -= w
	}
	return path
}

func injectErr(srv *mta.Server) error {
	_, err := srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	return err
}

// A spool whose disk fills up: mail is deferred with 452 4.3.1, never a
// crash; the server restarts on the full disk with its queue; when space
// returns it accepts again, and nothing accepted is lost.
func TestFullDisk(t *testing.T) {
	disk := smallDisk(t, 128)
	open := func() *testServer {
		data, meta, err := badgerspool.OpenPair(filepath.Join(disk, "spool"), badgerspool.Options{Logger: quietLogger()})
		if err != nil {
			t.Fatalf("open the spool on the full disk: %v", err)
		}
		return startServer(t, data, meta)
	}
	ts := open()
	if err := injectErr(ts.srv); err != nil {
		t.Fatal(err)
	}
	filler := fillTo(t, disk, 3)
	var se *smtp.SMTPError
	// Free space is read at most once a second.
	accepted := 1
	waitFor(t, "452 on the full disk", 5*time.Second, func() bool {
		err := injectErr(ts.srv)
		if err == nil {
			accepted++ // stored: the disk had room for it
		}
		return errors.As(err, &se) && se.Code == 452
	})
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	ts = open() // restart with the disk still full
	if ts.srv.QueuedCount() != accepted {
		t.Fatalf("%d messages recovered on the full disk, want the %d accepted", ts.srv.QueuedCount(), accepted)
	}
	if err := injectErr(ts.srv); !errors.As(err, &se) || se.Code != 452 {
		t.Fatalf("inject after a restart on a full disk: %v, want 452", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "acceptance after space returned", 5*time.Second, func() bool { return injectErr(ts.srv) == nil })
	if ts.srv.QueuedCount() != accepted+1 {
		t.Errorf("%d queued, want %d", ts.srv.QueuedCount(), accepted+1)
	}
}

// A disk filled to the last byte by someone else: badger's memory-mapped
// writes would kill the process with SIGBUS; the spool gives up its space
// reserve instead, delivery goes on (removals are writes) and new mail
// is deferred.
func TestDiskFilledToTheBrim(t *testing.T) {
	disk := smallDisk(t, 256)
	data, meta, err := badgerspool.OpenPair(filepath.Join(disk, "spool"), badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Int32
	deliver := func(context.Context, *mta.Delivery) error { delivered.Add(1); return nil }
	ts := startServer(t, data, meta, handlerQueue(deliver, time.Hour, time.Hour), func(o *mta.Options, _ *listener.Config) { o.HoldDelivery = true })
	const n = 50
	for range n {
		if err := injectErr(ts.srv); err != nil {
			t.Fatal(err)
		}
	}
	fillTo(t, disk, 0)
	ts.srv.ReleaseDelivery()
	waitFor(t, "delivery on the full disk", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	if delivered.Load() != n {
		t.Errorf("%d delivered, want %d", delivered.Load(), n)
	}
	// The released reserve is room to write in; fill that too. With no
	// reserve left, a write that may not fit is refused, not attempted.
	// (Removals after delivery are committed in the background, and the
	// first on the full disk releases the reserve: fill until it is gone.)
	reserve := filepath.Join(disk, "spool", badgerspool.ReserveFile)
	waitFor(t, "reserve released and its room filled", 5*time.Second, func() bool {
		_, err := os.Stat(reserve)
		gone := os.IsNotExist(err)
		fillTo(t, disk, 0)
		time.Sleep(50 * time.Millisecond) // tmpfs frees an unlinked file's pages a moment later
		fillTo(t, disk, 0)
		var st syscall.Statfs_t
		return gone && syscall.Statfs(disk, &st) == nil && st.Bavail == 0
	})
	var se *smtp.SMTPError
	if err := injectErr(ts.srv); !errors.As(err, &se) || se.Code/100 != 4 {
		t.Errorf("inject on a full disk without reserve: %v, want a 4xx", err)
	}
}
