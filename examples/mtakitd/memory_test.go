package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// anonRSS returns a process's resident anonymous memory (RssAnon) in
// bytes: what it allocated, without the file pages it maps.
func anonRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no RssAnon in /proc/PID/status")
}

// sampleAnonRSS records the peak of anonRSS(pid) every 10 ms until stop.
func sampleAnonRSS(t *testing.T, pid int, stop <-chan struct{}) <-chan int64 {
	t.Helper()
	if _, err := anonRSS(pid); err != nil {
		t.Skipf("cannot read the memory of a process: %v", err)
	}
	out := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := anonRSS(pid); err == nil {
				peak = max(peak, n)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// One transaction of 1 024 recipients and a 1 MiB message (1 024
// messages, BifurcateAlways) is accepted in bounded memory: the server
// prepares and stores a few at a time instead of all at once. Memory is
// the process's anonymous resident memory, sampled: the spool's value log
// is memory-mapped, so the 1 GiB written also shows as file-backed RSS,
// page cache that the kernel reclaims under pressure.
func TestManyRecipientsBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 1 GiB to the spool")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory use; .ci/run runs this test without -race")
	}
	listen := freeAddr(t)
	d := startDaemon(t, t.TempDir(), listen, "127.0.0.1:9", "-hold")
	defer d.close()
	before, _ := anonRSS(d.cmd.Process.Pid)
	stop := make(chan struct{})
	peakc := sampleAnonRSS(t, d.cmd.Process.Pid, stop)

	c, err := smtp.Dial(listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	const rcpts = 1024
	for i := range rcpts {
		if err := c.Rcpt(fmt.Sprintf("r%d@example.net", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 998) + "\r\n"
	var body bytes.Buffer
	body.WriteString("From: a@example.com\r\nSubject: many\r\n\r\n")
	for body.Len() < 1<<20 {
		body.WriteString(line)
	}
	if _, err := w.Write(body.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("1 024 recipients x 1 MiB refused: %v", err)
	}
	close(stop)
	peak := <-peakc
	t.Logf("peak anonymous RSS %d MiB (%d MiB before the transaction) for %d recipients x %d KiB", peak>>20, before>>20, rcpts, body.Len()>>10)
	if peak > 400<<20 {
		t.Errorf("peak anonymous RSS %d MiB, want under 400 MiB", peak>>20)
	}
}

// Memory per in-flight byte: 20 connections each hold a 10 MiB message
// in the server at once (the issue measured 30 x 15 MiB: 2.0 GB peak,
// 4.4x the payload, before the bounded store window). Every
// client sends its message but the final dot, all wait for each other,
// then all finish; the peak anonymous RSS growth of the daemon over the
// bytes in flight is the figure BENCHMARKS.md reports.
func TestMemoryPerInFlightByte(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 200 MiB")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory use; .ci/run runs this test without -race")
	}
	const conns, size = 20, 10 << 20
	listen := freeAddr(t)
	d := startDaemon(t, t.TempDir(), listen, "127.0.0.1:9", "-hold")
	defer d.close()
	before, _ := anonRSS(d.cmd.Process.Pid)
	stop := make(chan struct{})
	peakc := sampleAnonRSS(t, d.cmd.Process.Pid, stop)

	line := strings.Repeat("y", 998) + "\r\n"
	var body bytes.Buffer
	body.WriteString("From: a@example.com\r\nSubject: in flight\r\n\r\n")
	for body.Len()+len(line) <= size {
		body.WriteString(line)
	}
	var ready, wg sync.WaitGroup
	release := make(chan struct{})
	errs := make(chan error, conns)
	ready.Add(conns)
	for i := range conns {
		wg.Go(func() {
			arrived := false
			defer func() {
				if !arrived {
					ready.Done()
				}
			}()
			c, err := smtp.Dial(listen)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.Mail("a@example.com", nil); err != nil {
				errs <- err
				return
			}
			if err := c.Rcpt(fmt.Sprintf("r%d@example.net", i), nil); err != nil {
				errs <- err
				return
			}
			w, err := c.Data()
			if err != nil {
				errs <- err
				return
			}
			if _, err := w.Write(body.Bytes()); err != nil {
				errs <- err
				return
			}
			arrived = true
			ready.Done()
			<-release
			if err := w.Close(); err != nil {
				errs <- err
			}
		})
	}
	ready.Wait()
	time.Sleep(500 * time.Millisecond) // let the server read what was sent
	close(release)
	wg.Wait()
	close(stop)
	peak := <-peakc
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	inFlight := int64(conns) * int64(body.Len())
	ratio := float64(peak-before) / float64(inFlight)
	t.Logf("%d connections x %d KiB in flight (%d MiB): peak anonymous RSS %d MiB (%d MiB before): %.2f bytes of memory per byte in flight",
		conns, body.Len()>>10, inFlight>>20, peak>>20, before>>20, ratio)
	// The DATA buffer grows by doubling (up to 2x its content, plus the
	// smaller buffers it replaced until the GC runs), the message is
	// copied once with its trace headers and once more into badger's
	// write buffer: about 3x, depending on where the size falls between
	// powers of two. The issue measured 4.4x.
	if ratio > 4 {
		t.Errorf("%.2f bytes of memory per byte in flight, want at most 4", ratio)
	}
}
