package mta_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// Shutdown lets a transaction in progress finish and acknowledges it, sends
// idle sessions a 421, and refuses new connections.
func TestGracefulShutdown(t *testing.T) {
	data := spool.NewMemory()
	ts := startServer(t, data, spool.NewMemory())

	busy := dialRaw(t, ts.addr)
	ehlo(busy)
	busy.expectCmd("MAIL FROM:<a@example.com>", 250)
	busy.expectCmd("RCPT TO:<b@example.com>", 250)
	busy.expectCmd("DATA", 354)
	busy.send("Subject: in flight\r\n\r\nfirst half, ")

	idle := dialRaw(t, ts.addr)
	ehlo(idle)

	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()

	// The idle session is told to go away.
	if code, msg := idle.reply(); code != 421 || !strings.Contains(msg, "shutting down") {
		t.Errorf("idle session got %d %q, want 421", code, msg)
	}
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", ts.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a transaction was in progress", err)
	default:
	}

	// The busy session completes and is acknowledged, then closed.
	busy.send("second half\r\n.\r\n")
	if msg := busy.expect(250); !strings.Contains(msg, "OK ids=") {
		t.Fatalf("in-flight message reply %q", msg)
	}
	if !busy.closed() {
		t.Error("session left open after its transaction during shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last session ended")
	}
	if err := data.Enumerate(context.Background(), func(spool.ID, []byte) error { return nil }); err == nil {
		t.Error("spool still open after Shutdown")
	}
}
