package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// copyPolicy copies examples/policy into a temporary directory, applying
// the replacements (old, new pairs) to every file, and returns the new
// init.lua path.
func copyPolicy(t *testing.T, replace ...string) string {
	t.Helper()
	dst := t.TempDir()
	r := strings.NewReplacer(replace...)
	src := filepath.Join("..", "policy")
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), []byte(r.Replace(string(b))), 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dst, "init.lua")
}

// offline keeps the example policy from resolving the MX records of the
// community shaping file in tests.
var offline = []string{"no_default_files = false", "no_default_files = true"}

func TestCheckExamplePolicy(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"check", copyPolicy(t, offline...)}, &out, io.Discard); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "init.lua: OK") {
		t.Errorf("check output %q", out.String())
	}
}

// check reports every problem of a broken copy, each with file and line.
func TestCheckBrokenPolicy(t *testing.T) {
	path := copyPolicy(t, "no_default_files = false", "no_default_files = true",
		"max_message_size = '20MiB'", "max_message_size = '20 parsecs'",
		"max_segment_duration = '1 minute'", "max_segment_duration = 'a while'",
		"relay_to = true", "relay_too = true")
	var out bytes.Buffer
	err := run([]string{"check", path}, &out, io.Discard)
	if err == nil {
		t.Fatalf("check of a broken policy succeeded:\n%s", out.String())
	}
	text := out.String()
	for _, want := range []string{
		`init.lua:52: kumo.start_esmtp_listener: parameter "max_message_size": invalid size "20 parsecs"`,
		`init.lua:45: kumo.configure_local_logs: parameter "max_segment_duration"`,
		`listener_domains.toml:5: ["example.com"]: unknown parameter "relay_too"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("check output lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "error: "); n != 3 {
		t.Errorf("%d errors reported, want 3:\n%s", n, text)
	}

	// A syntax error is reported with its position.
	path = copyPolicy(t, "kumo.on('init', function()", "kumo.on('init' function()")
	// An unknown pool in queues.toml names the file and line.
	broken := copyPolicy(t, "no_default_files = false", "no_default_files = true", "egress_pool = 'bulk'", "egress_pool = 'bulky'")
	out.Reset()
	if err := run([]string{"check", broken}, &out, io.Discard); err == nil || !strings.Contains(out.String(), "queues.toml:10:") || !strings.Contains(out.String(), "bulky") {
		t.Errorf("unknown pool: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run([]string{"check", path}, &out, io.Discard); err == nil || !strings.Contains(out.String(), "init.lua:41:") {
		t.Errorf("syntax error: %v\n%s", err, out.String())
	}
}

// mtakitd -policy runs the example policy: its listener accepts mail for
// a relay_to domain from anywhere (here: loopback, which relay_hosts
// allows anyway) and refuses an undefined tenant as the policy says.
func TestRunPolicy(t *testing.T) {
	addr, httpAddr := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	path := copyPolicy(t, "127.0.0.1:2525", addr, "127.0.0.1:8000", httpAddr, "mtakit-data/", dir+"/", "no_default_files = false", "no_default_files = true")
	cmd := exec.Command(os.Args[0], "-policy", path, "-hold", "-log-level", "warn")
	cmd.Env = append(os.Environ(), "MTAKITD_MAIN=1")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(os.Interrupt)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Log("mtakitd:", sc.Text())
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mtakitd -policy did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	send := func(tenant string) error {
		c, err := smtp.Dial(addr)
		if err != nil {
			return err
		}
		defer c.Close()
		defer c.Quit()
		if err := c.Mail("a@example.com", nil); err != nil {
			return err
		}
		if err := c.Rcpt("b@example.com", nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		io.WriteString(w, "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nX-Tenant: "+tenant+"\r\n\r\nbody\r\n")
		return w.Close()
	}
	if err := send("bulk"); err != nil {
		t.Fatalf("send: %v", err)
	}
	// kumo.start_http_listener serves the HTTP API (and replaces -http's
	// default address).
	resp, err := http.Get("http://" + httpAddr + "/api/check-liveness/v1")
	if err != nil {
		t.Fatalf("the policy's HTTP listener: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("check-liveness: %s", resp.Status)
	}
	err = send("nobody")
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 500 || !strings.Contains(se.Message, "tenant 'nobody'") {
		t.Fatalf("undefined tenant: got %v, want 500 from the queue helper", err)
	}

	// Defining the tenant and sending SIGHUP reloads the policy.
	queues := filepath.Join(filepath.Dir(path), "queues.toml")
	b, _ := os.ReadFile(queues)
	os.WriteFile(queues, append(b, "\n[tenant.'nobody']\negress_pool = 'bulk'\n"...), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(10 * time.Second)
	for send("nobody") != nil {
		if time.Now().After(deadline) {
			t.Fatal("tenant 'nobody' still refused after SIGHUP")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "policy-spool")); err != nil {
		t.Errorf("the policy's spool was not created: %v", err)
	}
}
