package mta_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// procMem is the memory of this process as /proc/self/status and the Go
// runtime see it.
type procMem struct {
	rss, anon, file int64 // VmRSS, RssAnon, RssFile in bytes
	hwm             int64 // VmHWM: peak VmRSS
	heap            int64 // runtime HeapAlloc
	sys             int64 // runtime Sys
}

func readProcMem(tb testing.TB) procMem {
	tb.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	var pm procMem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmHWM":
			pm.hwm = kb << 10
		case "VmRSS":
			pm.rss = kb << 10
		case "RssAnon":
			pm.anon = kb << 10
		case "RssFile":
			pm.file = kb << 10
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pm.heap, pm.sys = int64(ms.HeapAlloc), int64(ms.Sys)
	return pm
}

// perMsg reports (after - before) / n for each figure.
func (pm procMem) perMsg(before procMem, n int) procMem {
	d := int64(n)
	return procMem{
		rss: (pm.rss - before.rss) / d, anon: (pm.anon - before.anon) / d, file: (pm.file - before.file) / d,
		heap: (pm.heap - before.heap) / d, sys: (pm.sys - before.sys) / d, hwm: (pm.hwm - before.rss) / d,
	}
}

func (pm procMem) String() string {
	return fmt.Sprintf("rss=%d anon=%d file=%d heap=%d sys=%d peak=%d", pm.rss, pm.anon, pm.file, pm.heap, pm.sys, pm.hwm)
}

// queuedMemoryPolicy sets what a MessageReceived policy typically adds:
// tenant and campaign, as fresh strings each time as Lua would make them.
func queuedMemoryPolicy(ctx context.Context, m *mta.Message) error {
	rcpt := m.Recipients()[0]
	k := len(rcpt) + int(rcpt[1])
	m.SetMeta(mta.MetaTenant, fmt.Sprintf("tenant-%d", k%10))
	m.SetMeta(mta.MetaCampaign, fmt.Sprintf("campaign-%d", k%7))
	return nil
}

// BenchmarkQueuedMemory measures the memory a queued message costs, right
// after a burst and after a restart, and the recovery rate. N messages
// (MTAKIT_BENCH_QUEUED, default 200 000) of 2 KB arrive over 20 STARTTLS
// connections with ESMTP meta (received_via/from, hostname, ehlo_domain,
// tls fields), a policy adding tenant and campaign, and Subject and
// Message-ID captured for the logs, into a durable badger spool pair with
// delivery held. It reports, per queued message, the growth of VmRSS,
// RssAnon, RssFile and the Go heap (and the peak, VmHWM, over the
// process's RSS before): 2 s after the last 250 ("burst"),
// after a GC ("burst-gc"), and in a fresh process that recovered the
// spool ("restart", after a GC). The restart runs in a child process (this
// test binary again) so that nothing of the burst remains.
//
// For profiling: MTAKIT_QMEM_SPOOL=dir stores into dir and keeps it (no
// restart then);
// MTAKIT_QMEM_RECOVER=dir MTAKIT_BENCH_QUEUED=n runs only the restart
// half on it (add -test.cpuprofile, and MTAKIT_QMEM_HEAPPROFILE=file for a
// heap profile taken after recovery and a GC); MTAKIT_QMEM_BURSTPROFILE=file
// writes one after the burst and a GC.
//
//	go test -run '^$' -bench QueuedMemory -benchtime 1x -timeout 30m ./mta/
func BenchmarkQueuedMemory(b *testing.B) {
	if dir := os.Getenv("MTAKIT_QMEM_RECOVER"); dir != "" {
		queuedMemoryRecoverChild(b, dir)
		return
	}
	n := 200000
	if s := os.Getenv("MTAKIT_BENCH_QUEUED"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 20 {
			b.Fatalf("MTAKIT_BENCH_QUEUED=%q: want a count of at least 20", s)
		}
	}
	const conns = 20
	dir := b.TempDir()
	tlsCfg, err := listener.EnsureSelfSigned(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "mx.test", "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		spoolDir := filepath.Join(dir, fmt.Sprintf("spool-%d", time.Now().UnixNano()))
		keep := os.Getenv("MTAKIT_QMEM_SPOOL") // keep the spool there, for profiling the restart again
		if keep != "" {
			spoolDir = keep
		}
		runtime.GC()
		before := readProcMem(b)
		data, meta, err := badgerspool.OpenPair(spoolDir, badgerspool.Options{Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		srv, err := mta.New(mta.Options{
			Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Logger: quietLogger(),
			HoldDelivery: true, Resolver: testResolver(b),
			LogHeaders: []string{"Subject", "Message-ID"},
			Policy:     mta.Policy{MessageReceived: queuedMemoryPolicy},
		})
		if err != nil {
			b.Fatal(err)
		}
		addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0", TLS: tlsCfg})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		sendQueuedMemoryLoad(b, addr.String(), conns, n)
		accepted := time.Since(start)
		if got := srv.QueuedCount(); got != n {
			b.Fatalf("queued %d, want %d", got, n)
		}
		time.Sleep(2 * time.Second)
		burst := readProcMem(b).perMsg(before, n)
		runtime.GC()
		burstGC := readProcMem(b).perMsg(before, n)
		writeHeapProfile(b, os.Getenv("MTAKIT_QMEM_BURSTPROFILE"))
		if err := srv.Close(); err != nil {
			b.Fatal(err)
		}
		if keep != "" {
			b.Logf("%d messages accepted at %.0f msgs/s", n, float64(n)/accepted.Seconds())
			b.Logf("per queued message, burst (2 s after):  %v", burst)
			b.Logf("per queued message, burst after GC:     %v", burstGC)
			b.Logf("spool kept in %s; restart not measured", keep)
			continue
		}

		// The child inherits the environment plus the spool to recover.
		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkQueuedMemory$", "-test.benchtime=1x")
		cmd.Env = append(os.Environ(), "MTAKIT_QMEM_RECOVER="+spoolDir, fmt.Sprintf("MTAKIT_BENCH_QUEUED=%d", n))
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("recovery child: %v\n%s", err, out)
		}
		var restart, restartRaw procMem
		var rate float64
		for line := range strings.Lines(string(out)) {
			if rest, ok := strings.CutPrefix(line, "qmem-restart "); ok {
				fmt.Sscanf(rest, "rate=%g raw: rss=%d anon=%d file=%d heap=%d sys=%d peak=%d gc: rss=%d anon=%d file=%d heap=%d sys=%d peak=%d", &rate,
					&restartRaw.rss, &restartRaw.anon, &restartRaw.file, &restartRaw.heap, &restartRaw.sys, &restartRaw.hwm,
					&restart.rss, &restart.anon, &restart.file, &restart.heap, &restart.sys, &restart.hwm)
			}
		}
		if rate == 0 {
			b.Fatalf("recovery child printed no result:\n%s", out)
		}
		b.Logf("%d messages accepted at %.0f msgs/s", n, float64(n)/accepted.Seconds())
		b.Logf("per queued message, burst (2 s after):  %v", burst)
		b.Logf("per queued message, burst after GC:     %v", burstGC)
		b.Logf("per queued message, restart (as is):    %v", restartRaw)
		b.Logf("per queued message, restart after GC:   %v", restart)
		b.ReportMetric(float64(burst.rss), "burst-rss-B/msg")
		b.ReportMetric(float64(burst.anon), "burst-anon-B/msg")
		b.ReportMetric(float64(burst.hwm), "burst-peak-B/msg")
		b.ReportMetric(float64(burstGC.anon), "burst-gc-anon-B/msg")
		b.ReportMetric(float64(burstGC.heap), "heap-B/msg")
		b.ReportMetric(float64(restartRaw.rss), "restart-rss-B/msg")
		b.ReportMetric(float64(restart.anon), "restart-gc-anon-B/msg")
		b.ReportMetric(float64(restart.heap), "restart-heap-B/msg")
		b.ReportMetric(rate, "recover-msgs/s")
		if keep == "" {
			os.RemoveAll(spoolDir)
		}
	}
}

// queuedMemoryRecoverChild is the restart half of BenchmarkQueuedMemory:
// recover the spool in dir and print the memory per message.
func queuedMemoryRecoverChild(b *testing.B, dir string) {
	n, err := strconv.Atoi(os.Getenv("MTAKIT_BENCH_QUEUED"))
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	before := readProcMem(b)
	data, meta, err := badgerspool.OpenPair(dir, badgerspool.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	srv, err := mta.New(mta.Options{Hostname: "mx.test", DataSpool: data, MetaSpool: meta, Logger: quietLogger(), HoldDelivery: true, Resolver: testResolver(b)})
	if err != nil {
		b.Fatal(err)
	}
	rate := float64(n) / time.Since(start).Seconds()
	defer srv.Close()
	if got := srv.QueuedCount(); got != n {
		b.Fatalf("recovered %d, want %d", got, n)
	}
	time.Sleep(2 * time.Second)
	raw := readProcMem(b).perMsg(before, n)
	runtime.GC()
	gc := readProcMem(b).perMsg(before, n)
	writeHeapProfile(b, os.Getenv("MTAKIT_QMEM_HEAPPROFILE"))
	fmt.Printf("qmem-restart rate=%g raw: %v gc: %v\n", rate, raw, gc)
}

// writeHeapProfile writes a heap profile to path, if set.
func writeHeapProfile(tb testing.TB, path string) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
}

// sendQueuedMemoryLoad sends n messages over conns concurrent STARTTLS
// sessions, one recipient each, spread over 50 domains.
func sendQueuedMemoryLoad(b *testing.B, addr string, conns, n int) {
	// Bodies are base64 of random bytes, as incompressible as most mail;
	// 64 variants keep the sender cheap.
	var fillers [64]string
	for i := range fillers {
		raw := make([]byte, 1400)
		rand.Read(raw)
		enc := base64.StdEncoding.EncodeToString(raw)
		var sb strings.Builder
		for len(enc) > 76 {
			sb.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		sb.WriteString(enc + "\r\n")
		fillers[i] = sb.String()
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		cn := n / conns
		if c < n%conns {
			cn++
		}
		wg.Go(func() {
			var cl *smtp.Client
			defer func() {
				if cl != nil {
					cl.Close()
				}
			}()
			var msg bytes.Buffer
			for i := range cn {
				// A new session every 5 000 messages (the listener allows
				// 10 000 per connection). The client says EHLO localhost,
				// before and after STARTTLS.
				if i%5000 == 0 {
					if cl != nil {
						cl.Quit()
					}
					var err error
					if cl, err = smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true}); err != nil {
						errs <- err
						return
					}
				}
				rcpt := fmt.Sprintf("user%d@domain%d.example", i, (c*cn+i)%50)
				msg.Reset()
				fmt.Fprintf(&msg, "From: news@sender.example\r\nTo: <%s>\r\nSubject: Offer %d for you\r\nMessage-ID: <%d.%d@sender.example>\r\n\r\n%s", rcpt, i%100, c, i, fillers[(c+i)%len(fillers)])
				if err := cl.SendMail(fmt.Sprintf("bounce-%d@sender.example", c), []string{rcpt}, bytes.NewReader(msg.Bytes())); err != nil {
					errs <- fmt.Errorf("message %d on connection %d: %w", i, c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
