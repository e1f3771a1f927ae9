package main

import (
	"context"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/spooltest"
)

func TestFileSpoolContract(t *testing.T) {
	spooltest.RunDurable(t, func(t *testing.T, dir string) spool.Spool {
		s, err := OpenFileSpool(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// The program accepts mail over SMTP into its own spool, which keeps it
// across a restart.
func TestServerWithFileSpool(t *testing.T) {
	dir := t.TempDir()
	serve := func(send func(addr string)) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		addrs := make(chan string, 1)
		go func() { done <- run(ctx, "127.0.0.1:0", dir, true, func(a string) { addrs <- a }) }()
		select {
		case a := <-addrs:
			send(a)
		case err := <-done:
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	serve(func(addr string) {
		msg := "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
		if err := smtp.SendMail(addr, nil, "a@example.com", []string{"b@example.net"}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	})
	for _, sub := range []string{"data", "meta"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil || len(entries) != 1 {
			t.Fatalf("%s spool: %d files, %v; want the one message", sub, len(entries), err)
		}
	}
	serve(func(string) {}) // restart: recovery reads the file spool
}

// A program with its own spool does not link badger (nor its OpenTelemetry
// and protobuf dependencies).
func TestNoBadgerLinked(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "badger") || strings.Contains(dep, "opentelemetry") || strings.Contains(dep, "protobuf") {
			t.Errorf("customspool links %s", dep)
		}
	}
}
