package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta/metrics"
)

// TestMain lets the tests run mtakitd as a real child process: the test
// binary re-executes itself with MTAKITD_MAIN=1 and runs main.
func TestMain(m *testing.M) {
	if os.Getenv("MTAKITD_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-listen", "nope"}, "-listen"},
		{[]string{"-http", "8000"}, "-http"},
		{[]string{"-smarthost", "host-without-port"}, "-smarthost"},
		{[]string{"check"}, "exactly one"},
		{[]string{"-smarthost", "h:25", "-smarthost-tls", "Sometimes"}, "-smarthost-tls"},
		{[]string{"-smarthost-auth-file", "auth"}, "need -smarthost"},
		{[]string{"-tls-cert", "c.pem"}, "together"},
		{[]string{"-log-level", "chatty"}, "-log-level"},
		{[]string{"-batch-handling", "ByDomain"}, "-batch-handling"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"-no-such-flag"}, "not defined"},
	}
	for _, tc := range tests {
		err := run(tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-data", filepath.Join(file, "sub"), "-listen", "127.0.0.1:0"}, "data directory"},
		{[]string{"-data", t.TempDir(), "-listen", busy.Addr().String()}, "address already in use"},
		{[]string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-dkim", filepath.Join(t.TempDir(), "missing.toml")}, "missing.toml"},
		{[]string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-smarthost", "h:25", "-smarthost-auth-file", file}, "username:password"},
		{[]string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-smarthost", "h:25", "-smarthost-ca", file}, "no PEM certificate"},
	}
	for _, tc := range tests {
		err := run(append(tc.args, "-http", ""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

// Mistakes on the command line are reported before mtakitd creates or
// opens anything: no data directory appears.
func TestErrorsBeforeSideEffects(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", busy.Addr().String()}, "address already in use"},
		{[]string{"-listen", ":99999"}, "invalid port"},
		{[]string{"-listen", "127.0.0.1:0", "-http", busy.Addr().String()}, "address already in use"},
		{[]string{"-listen", "127.0.0.1:0", "-dkim", filepath.Join(t.TempDir(), "missing.toml")}, "missing.toml"},
		{[]string{"-listen", "127.0.0.1:0", "-tls-cert", "nope.pem", "-tls-key", "nope.key"}, "nope"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"-data", data, "-http", ""}, tc.args...)
		err := run(args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want error containing %q", tc.args, err, tc.want)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Errorf("%v: data directory created before the error was found", tc.args)
		}
	}
}

// An unknown flag is reported once (by the flag package, with the usage),
// not again by main.
func TestUnknownFlagReportedOnce(t *testing.T) {
	var stderr strings.Builder
	err := run([]string{"-no-such-flag"}, io.Discard, &stderr)
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Fatalf("run: %v, want a usage error that main does not print again", err)
	}
	if n := strings.Count(stderr.String(), "no-such-flag"); n != 1 {
		t.Errorf("the unknown flag is named %d times on stderr, want once:\n%s", n, stderr.String())
	}
}

// daemon is mtakitd running as a child process.
type daemon struct {
	cmd  *exec.Cmd
	addr string
}

// startDaemon runs mtakitd without its HTTP API unless extra flags (which
// win over earlier ones) give it an address.
func startDaemon(t *testing.T, dataDir, listen, smarthost string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"-listen", listen, "-data", dataDir, "-smarthost", smarthost, "-hostname", "mx.test", "-log-level", "warn", "-http", ""}, extra...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MTAKITD_MAIN=1")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // surface the daemon's warnings in the test log
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Log("mtakitd:", sc.Text())
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			return &daemon{cmd: cmd, addr: listen}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("mtakitd did not start listening on %s", listen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) kill()  { d.cmd.Process.Signal(syscall.SIGKILL); d.cmd.Wait() }
func (d *daemon) close() { d.cmd.Process.Signal(syscall.SIGTERM); d.cmd.Wait() }

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Every message that got a 250 is delivered at least once although
// mtakitd is killed with SIGKILL at random moments under load.
func TestCrashRecovery(t *testing.T) {
	kills := 10
	if testing.Short() {
		kills = 3
	}
	sink, err := smtpsink.Start(smtpsink.Options{KeyHeader: "X-Test-Seq"})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dataDir := t.TempDir()
	listen := freeAddr(t)
	d := startDaemon(t, dataDir, listen, sink.Addr())

	var mu sync.Mutex
	acked := map[string]bool{}
	var seq int
	// send runs 4 connections of n messages and returns how many got 250.
	send := func(n int) int {
		var ackedHere atomic.Int32
		var wg sync.WaitGroup
		for c := 0; c < 4; c++ {
			wg.Go(func() {
				cl, err := smtp.Dial(listen)
				if err != nil {
					return // the daemon may be dead right now
				}
				defer cl.Close()
				for i := 0; i < n; i++ {
					mu.Lock()
					seq++
					key := fmt.Sprintf("k%06d", seq)
					mu.Unlock()
					msg := "From: a@example.com\r\nX-Test-Seq: " + key + "\r\nSubject: crash\r\n\r\nbody\r\n"
					if err := cl.SendMail("a@example.com", []string{"r@dest.example"}, strings.NewReader(msg)); err != nil {
						return // connection cut by the kill: not acknowledged
					}
					mu.Lock()
					acked[key] = true
					mu.Unlock()
					ackedHere.Add(1)
				}
			})
		}
		wg.Wait()
		return int(ackedHere.Load())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < kills; k++ {
		done := make(chan struct{})
		go func() { send(25); close(done) }()
		time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond)
		d.kill()
		<-done
		d = startDaemon(t, dataDir, listen, sink.Addr())
	}
	// A healthy daemon acknowledges everything: a server that answered
	// 451 to every message would otherwise pass ("0 acknowledged, none
	// lost").
	if got := send(10); got != 40 {
		t.Fatalf("after the last restart %d of 40 messages acknowledged", got)
	}
	defer d.close()

	mu.Lock()
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = sink.Wait(ctx, func(smtpsink.Stats) bool {
		for _, k := range keys {
			if sink.DeliveryCount(k, "r@dest.example") == 0 {
				return false
			}
		}
		return true
	})
	var lost []string
	for _, k := range keys {
		if sink.DeliveryCount(k, "r@dest.example") == 0 {
			lost = append(lost, k)
		}
	}
	if len(keys) < 40+kills {
		t.Fatalf("only %d messages acknowledged across %d kills: the test proves little", len(keys), kills)
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages never delivered (%v): %v", len(lost), len(keys), err, lost)
	}
	t.Logf("%d kills, %d acknowledged messages, all delivered; %d duplicates", kills, len(keys), len(sink.Duplicates()))
}

// -dns-trust-ad starts the server with a resolver that believes the AD
// bit (for DANE).
func TestTrustADFlag(t *testing.T) {
	c, err := parseFlags([]string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-http", "", "-hold", "-dns-trust-ad"}, io.Discard)
	if err != nil || !c.trustAD {
		t.Fatalf("parse: %+v, %v", c, err)
	}
	srv, _, err := start(c, slog.New(slog.DiscardHandler), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
}
