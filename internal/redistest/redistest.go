// Package redistest starts a throwaway redis-server on 127.0.0.1 for
// tests (Debian package redis-server). Without the binary a test is
// skipped, unless MTAKIT_REQUIRE_REDIS=1 (as in CI), when it fails.
package redistest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server on a free loopback port, without persistence,
// and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MTAKIT_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis-server not found and MTAKIT_REQUIRE_REDIS=1: %v", err)
		}
		t.Skip("redis-server not installed (apt-get install redis-server); set MTAKIT_REQUIRE_REDIS=1 to make this a failure")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// Addr is the server's "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Stop kills the server (as a crash would) and waits for it to exit.
func (s *Server) Stop() {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Kill()
		<-s.done
	}
}
