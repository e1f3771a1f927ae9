package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"strconv"
	"testing"
	"time"

	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/shaping"
)

// Over loopback SMTP: the domain's connection limit holds at the sink, a
// 421-class answer pauses the site, and delivery resumes by itself.
func TestBackoffShaper(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	host, portText, _ := net.SplitHostPort(sink.Addr())
	port, _ := strconv.Atoi(portText)
	shaper := &BackoffShaper{
		Default: Limits{Connections: 2},
		Pause:   time.Second,
		Base: func(pc *shaping.PathConfig) {
			pc.ProhibitedHosts = []netip.Prefix{}
			pc.SMTPPort = port
			pc.EnableTLS = shaping.Disabled
			pc.IdleTimeout = 100 * time.Millisecond
		},
	}
	srv, err := newServer(shaper, mta.Options{Policy: mta.Policy{QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
		return mta.QueueConfig{RetryInterval: 200 * time.Millisecond, MaxAge: time.Hour, Protocol: mta.Protocol{MXList: []string{host}}}, nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	send := func(rcpt string) {
		t.Helper()
		msg := fmt.Sprintf("From: a@example.com\r\nSubject: %s\r\n\r\nhello\r\n", rcpt)
		if err := smtp.SendMail(addr.String(), nil, "a@example.com", []string{rcpt}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		send(fmt.Sprintf("r%d@example.net", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sink.WaitCount(ctx, 20); err != nil {
		t.Fatal(err)
	}
	if peak := sink.Stats().PeakConns; peak > 2 {
		t.Errorf("%d connections at once, limit 2", peak)
	}

	// The sink answers the next RCPT with 421: the site pauses.
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Code: 421, Text: "too busy, slow down", Times: 1})
	send("paused@example.net")
	deadline := time.Now().Add(5 * time.Second)
	for sink.Stats().Faults == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	pausedAt := time.Now()
	if err := sink.WaitCount(ctx, 21); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(pausedAt); waited < 800*time.Millisecond {
		t.Errorf("delivered %v after the 421, want a pause of about 1s", waited)
	}
}
