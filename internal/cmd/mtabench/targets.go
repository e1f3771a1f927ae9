package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// mtakitd is a running examples/mtakitd subprocess.
type mtakitd struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	waitErr error

	ready chan struct{}

	mu         sync.Mutex
	addr       string        // SMTP address from the "mtakitd ready" line
	readyAfter time.Duration // process start → "mtakitd ready"
	recovered  int           // "spool recovered" messages=
	recoverDur time.Duration // "spool recovered" duration=
	tail       []string      // last log lines, for errors
}

// buildMtakitd builds examples/mtakitd into dir with the go command; the
// working directory must be inside the mtakit module.
func buildMtakitd(dir string) (string, error) {
	bin := filepath.Join(dir, "mtakitd")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/mtakit/mtakit/examples/mtakitd")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build examples/mtakitd (run mtabench inside the mtakit module, or pass -mtakitd): %w", err)
	}
	return bin, nil
}

// startMtakitd runs bin on a fresh loopback port with its data under
// dataDir, relaying everything to smarthost (or holding it, with hold),
// and returns once it logs "mtakitd ready". extra flags (-mtakitd-args)
// come last, so they can override the harness's.
func startMtakitd(bin, dataDir, smarthost string, hold bool, timeout time.Duration, extra ...string) (*mtakitd, error) {
	// No HTTP API: its default port would clash with any other mtakitd
	// on the machine, and the harness does not use it.
	args := []string{"-listen", "127.0.0.1:0", "-http", "", "-data", dataDir, "-hostname", "mtakit-bench.localhost", "-log-level", "info"}
	if smarthost != "" {
		args = append(args, "-smarthost", smarthost)
	}
	if hold {
		args = append(args, "-hold")
	}
	args = append(args, extra...)
	m := &mtakitd{cmd: exec.Command(bin, args...), exited: make(chan struct{}), ready: make(chan struct{})}
	// mtakitd dies with the harness, whatever happens to it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	m.started = time.Now()
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		m.readLog(stderr)
	}()
	go func() {
		<-logsDone
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	select {
	case <-m.ready:
		return m, nil
	case <-m.exited:
		return nil, fmt.Errorf("mtakitd exited before it was ready (%v):\n%s", m.waitErr, m.logTail())
	case <-time.After(timeout):
		m.kill()
		return nil, fmt.Errorf("mtakitd not ready after %v:\n%s", timeout, m.logTail())
	}
}

func (m *mtakitd) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		m.mu.Lock()
		m.tail = append(m.tail, line)
		if len(m.tail) > 40 {
			m.tail = m.tail[1:]
		}
		msg, _ := logfmtValue(line, "msg")
		switch msg {
		case "spool recovered":
			if v, ok := logfmtValue(line, "messages"); ok {
				m.recovered, _ = strconv.Atoi(v)
			}
			if v, ok := logfmtValue(line, "duration"); ok {
				m.recoverDur, _ = time.ParseDuration(v)
			}
		case "mtakitd ready":
			if m.addr == "" {
				m.addr, _ = logfmtValue(line, "smtp")
				m.readyAfter = now.Sub(m.started)
				close(m.ready)
			}
		}
		m.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

func (m *mtakitd) logTail() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.tail, "\n")
}

func (m *mtakitd) pid() int { return m.cmd.Process.Pid }

// stop sends SIGTERM (graceful shutdown) and waits for the exit, killing
// the process after timeout. It returns how long the exit took.
func (m *mtakitd) stop(timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, err
	}
	select {
	case <-m.exited:
		if m.waitErr != nil {
			return time.Since(t0), fmt.Errorf("mtakitd: %v:\n%s", m.waitErr, m.logTail())
		}
		return time.Since(t0), nil
	case <-time.After(timeout):
		m.kill()
		return time.Since(t0), fmt.Errorf("mtakitd did not stop within %v; killed", timeout)
	}
}

// kill sends SIGKILL and waits for the exit.
func (m *mtakitd) kill() {
	m.cmd.Process.Kill()
	<-m.exited
}

// postfixInstance is a throwaway Postfix set up by postfix.sh under dir.
type postfixInstance struct {
	script string
	dir    string
	addr   string
}

func runScript(script string, args ...string) error {
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("postfix.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// startPostfix sets up and starts a Postfix instance under dir listening
// on a free loopback port and relaying everything to relay; params are
// extra main.cf settings (NAME=VALUE).
func startPostfix(script, dir, relay string, params []string) (*postfixInstance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := runScript(script, append([]string{"setup", dir, strconv.Itoa(port), relay}, params...)...); err != nil {
		return nil, err
	}
	if err := runScript(script, "start", dir); err != nil {
		return nil, err
	}
	return &postfixInstance{script: script, dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}, nil
}

// masterPID reads the master's pid from data_directory/master.lock.
func (p *postfixInstance) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "data", "master.lock"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (p *postfixInstance) stop() error { return runScript(p.script, "stop", p.dir) }

// queueFiles counts the messages in the instance's queues (incoming,
// active, deferred, hold, maildrop).
func (p *postfixInstance) queueFiles() int {
	n := 0
	for _, q := range []string{"incoming", "active", "deferred", "hold", "maildrop"} {
		filepath.WalkDir(filepath.Join(p.dir, "queue", q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// postfixSink is Postfix's smtp-sink, run as a subprocess. Its counts
// are of recipients in completed transactions. With one recipient per
// message that is its running message counter (-c, "mesg="). smtp-sink
// counts no recipients, so for more (perRcpt) it runs with -v, which logs
// every command line to stderr, and the harness counts RCPT lines (see
// rcptCounter).
type postfixSink struct {
	cmd  *exec.Cmd
	addr string

	counts   *countWatcher
	txns     atomic.Int64 // completed transactions ("mesg=", or "." lines with -v)
	exited   chan struct{}
	stopOnce sync.Once
}

func startPostfixSink(perRcpt bool) (*postfixSink, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &postfixSink{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{}), counts: newCountWatcher()}
	// -u: the user to run as (required as root); backlog 256.
	args := []string{"-u", "nobody", "-c", s.addr, "256"}
	if perRcpt {
		args = append([]string{"-v"}, args...)
	}
	s.cmd = exec.Command("smtp-sink", args...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var verbose io.ReadCloser
	if perRcpt {
		if verbose, err = s.cmd.StderrPipe(); err != nil {
			return nil, err
		}
	} else {
		s.cmd.Stderr = os.Stderr
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	var readers sync.WaitGroup
	if perRcpt {
		readers.Go(func() {
			var rc rcptCounter
			sc := bufio.NewScanner(verbose)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if n, done := rc.line(sc.Text()); done {
					s.txns.Store(int64(rc.dots))
					s.counts.record(n, time.Now())
				}
			}
			io.Copy(io.Discard, verbose)
		})
	}
	go func() {
		defer close(s.exited)
		r := bufio.NewReader(out)
		for {
			rec, err := r.ReadString('\r')
			if n, perr := smtpSinkCount(rec); perr == nil && strings.HasSuffix(rec, "\r") && !perRcpt {
				s.txns.Store(int64(n))
				s.counts.record(n, time.Now())
			}
			if err != nil {
				break
			}
		}
		readers.Wait()
		s.cmd.Wait()
	}()
	// Wait until it listens; a probe session without mail does not change
	// the mesg= counter.
	for range 100 {
		if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.close()
	return nil, errors.New("smtp-sink did not listen within 5s")
}

// Transactions returns the transactions smtp-sink completed.
func (s *postfixSink) Transactions() int { return int(s.txns.Load()) }

// Count returns smtp-sink's recipient count now.
func (s *postfixSink) Count() int {
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	if len(s.counts.steps) == 0 {
		return 0
	}
	return s.counts.steps[len(s.counts.steps)-1].n
}

func (s *postfixSink) close() {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// runSMTPSource runs Postfix's smtp-source against addr and returns when
// it exits (or ctx ends). With -r, smtp-source names the recipients of a
// message 1rcpt@, 2rcpt@, ... the same for every message.
func runSMTPSource(ctx context.Context, addr string, n, size, conns, rcpts int) error {
	cmd := exec.CommandContext(ctx, "smtp-source",
		"-s", strconv.Itoa(conns), "-l", strconv.Itoa(size), "-m", strconv.Itoa(n), "-r", strconv.Itoa(rcpts),
		"-f", benchFrom, "-t", "rcpt@"+benchDomain, "-M", "mtabench.localhost", addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("smtp-source: %v\n%s", err, out)
	}
	return nil
}

// binaryInfo identifies the mtakitd binary measured: its VCS stamp (go
// build's vcs.revision and vcs.modified, when built in a checkout) and a
// hash of the file.
type binaryInfo struct {
	Path     string `json:"path"`
	Revision string `json:"vcs_revision,omitempty"`
	Modified bool   `json:"vcs_modified,omitempty"`
	SHA256   string `json:"sha256"`
}

func describeBinary(path string) binaryInfo {
	bi := binaryInfo{Path: path}
	if info, err := buildinfo.ReadFile(path); err == nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				bi.Revision = s.Value
			case "vcs.modified":
				bi.Modified = s.Value == "true"
			}
		}
	}
	if f, err := os.Open(path); err == nil {
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		bi.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	return bi
}
