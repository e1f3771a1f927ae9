package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/mta/logs"
)

// After kill -9, the log holds every record older than the flush interval
// (1 s): the open segment's unfinished tail is lost, and the reader
// returns every complete record before it.
func TestLogsSurviveKillWithinFlushInterval(t *testing.T) {
	data := t.TempDir()
	listen := freeAddr(t)
	d := startDaemon(t, data, listen, "127.0.0.1:9", "-hold")
	c, err := smtp.Dial(listen)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		msg := fmt.Sprintf("From: a@example.com\r\nSubject: log %d\r\n\r\nbody\r\n", i)
		if err := c.SendMail("a@example.com", []string{"r@example.net"}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	time.Sleep(1500 * time.Millisecond) // more than the flush interval
	d.kill()

	recs, err := logs.ReadDir(filepath.Join(data, "logs"))
	if err != nil {
		t.Fatalf("reading the log of a killed server: %v", err)
	}
	receptions := 0
	for _, r := range recs {
		if r.Type == logs.Reception {
			receptions++
		}
	}
	if receptions != n {
		t.Errorf("%d Reception records after kill -9, want all %d acknowledged more than a flush interval earlier", receptions, n)
	}
}
