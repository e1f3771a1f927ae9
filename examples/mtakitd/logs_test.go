package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtakit/mtakit/mta/logs"
)

// "mtakitd logs -f" prints records appended to a log directory while it
// runs, within 2 s, and stops on SIGINT.
func TestLogsFollow(t *testing.T) {
	dir := t.TempDir()
	w, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir, FlushInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	logRec := func(id string) {
		rec := &logs.Record{Type: logs.Reception, ID: id, Sender: "s@example.com", Recipient: logs.Recipients{"r@example.net"}, Queue: "example.net"}
		rec.SetTimes(time.Now(), time.Now())
		if err := w.Log(rec); err != nil {
			t.Fatal(err)
		}
	}
	logRec("before")

	cmd := exec.Command(os.Args[0], "logs", "-f", dir)
	cmd.Env = append(os.Environ(), "MTAKITD_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(id string, within time.Duration) {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("mtakitd logs ended before %s", id)
				}
				if strings.Contains(l, " "+id+" ") {
					if !strings.Contains(l, "Reception") || !strings.Contains(l, "<s@example.com> -> <r@example.net> queue=example.net") {
						t.Errorf("line %q", l)
					}
					return
				}
			case <-timeout:
				t.Fatalf("record %s not printed within %s", id, within)
			}
		}
	}
	expect("before", 5*time.Second)
	logRec("during")
	expect("during", 2*time.Second)

	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("mtakitd logs -f after SIGINT: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("mtakitd logs -f did not stop on SIGINT")
	}
}
