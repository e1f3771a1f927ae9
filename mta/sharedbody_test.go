package mta_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// The recipients of one transaction share one stored body: it is written
// once, each message keeps its own trace fields, and the body goes when
// the last of them is finished, not before.
func TestSharedBodyOutlivesEarlyRecipients(t *testing.T) {
	e := startE2E(t, 2*time.Second, time.Hour, smtpsink.Options{Store: true}, nil)
	e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("later"), Code: 451, Enhanced: smtp.EnhancedCode{4, 2, 1}, Text: "not now", Times: 1})

	rc := dialRaw(t, e.addr)
	ehlo(rc)
	content := testMessage("shared", "one body for three")
	rcpts := []string{"a@dest.test", "later@dest.test", "c@dest.test"}
	ids := sendMail(t, rc, "s@example.com", rcpts, content)
	if len(ids) != 3 {
		t.Fatalf("ids %v", ids)
	}

	waitFor(t, "two delivered, one deferred", 10*time.Second, func() bool {
		return e.sink.Count() == 2 && len(e.testServer.sink.OfType(logs.TransientFailure)) == 1
	})
	// later@ waits 2 s for its retry: its own record and the body remain.
	if e.srv.QueuedCount() == 1 {
		if n := countSpool(t, e.data); n != 2 {
			t.Errorf("data spool holds %d records while one recipient waits, want 2 (its own fields and the shared body)", n)
		}
	}
	waitFor(t, "all delivered", 10*time.Second, func() bool { return e.srv.QueuedCount() == 0 })
	if n := countSpool(t, e.data); n != 0 {
		t.Errorf("data spool holds %d records after the last delivery, want 0", n)
	}
	if n := countSpool(t, e.meta); n != 0 {
		t.Errorf("meta spool holds %d records, want 0", n)
	}

	got := map[string]bool{}
	for _, m := range e.sink.Messages() {
		if len(m.To) != 1 {
			t.Fatalf("message to %v, want one recipient per message", m.To)
		}
		rcpt := m.To[0]
		got[rcpt] = true
		s := string(m.Data)
		if !strings.HasSuffix(s, content) {
			t.Errorf("%s: content changed:\n%s", rcpt, s)
		}
		if !strings.Contains(s, "\tfor <"+rcpt+">;") {
			t.Errorf("%s: Received field is not its own:\n%s", rcpt, s)
		}
		if strings.Count(s, "Received: ") != 1 || strings.Count(s, "X-KumoRef: ") != 1 {
			t.Errorf("%s: trace fields of other recipients leaked in:\n%s", rcpt, s)
		}
	}
	for _, r := range rcpts {
		if !got[r] {
			t.Errorf("%s not delivered", r)
		}
	}
}

// Shared bodies survive a restart: recovery counts their references again,
// so neither the orphan reclaimer nor an early delivery removes a body a
// queued message still needs.
func TestSharedBodySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"), func(o *mta.Options, _ *listener.Config) {
		o.Policy.MessageReceived = func(_ context.Context, m *mta.Message) error {
			m.PrependHeader("X-Rcpt", m.Recipients()[0])
			return nil
		}
	})
	content := "Subject: restart\r\n\r\nshared across a restart\r\n"
	rcpts := []string{"a@dest.example", "b@dest.example", "c@dest.example"}
	if _, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: rcpts, Data: []byte(content)}); err != nil {
		t.Fatal(err)
	}
	if n := countSpool(t, ts.data); n != 4 {
		t.Errorf("data spool holds %d records, want 4 (three messages' own fields, one body)", n)
	}
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	delivered := map[string]string{}
	ok := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		delivered[d.Recipients[0]] = string(d.Data)
		return nil
	}
	ts2 := startServer(t, openBadger(t, dir+"/data"), openBadger(t, dir+"/meta"), handlerQueue(ok, time.Second, time.Hour))
	waitFor(t, "delivery after restart", 10*time.Second, func() bool { return ts2.srv.QueuedCount() == 0 })
	mu.Lock()
	defer mu.Unlock()
	for _, r := range rcpts {
		if delivered[r] != "X-Rcpt: "+r+"\r\n"+content {
			t.Errorf("%s: delivered %q", r, delivered[r])
		}
	}
	if n := countSpool(t, ts2.data); n != 0 {
		t.Errorf("data spool holds %d records after delivery, want 0", n)
	}
}

// A policy hook that rewrites one recipient's content gives that message
// a complete record of its own; the others keep sharing.
func TestSharedBodyWithRewrittenContent(t *testing.T) {
	var mu sync.Mutex
	delivered := map[string]string{}
	ok := func(_ context.Context, d *mta.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		delivered[d.Recipients[0]] = string(d.Data)
		return nil
	}
	ts := startServer(t, spool.NewMemory(), spool.NewMemory(), handlerQueue(ok, time.Second, time.Hour), func(o *mta.Options, _ *listener.Config) {
		o.HoldDelivery = true
		o.Policy.MessageReceived = func(_ context.Context, m *mta.Message) error {
			if m.Recipients()[0] == "rewrite@dest.example" {
				m.SetData([]byte("Subject: rewritten\r\n\r\nnew\r\n"))
			}
			return nil
		}
	})
	rcpts := []string{"a@dest.example", "rewrite@dest.example", "c@dest.example"}
	if _, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: rcpts, Data: []byte("Subject: orig\r\n\r\norig\r\n")}); err != nil {
		t.Fatal(err)
	}
	if n := countSpool(t, ts.data); n != 4 {
		t.Errorf("data spool holds %d records, want 4 (two messages' own fields, one complete message, one body)", n)
	}
	ts.srv.ReleaseDelivery()
	waitFor(t, "delivery", 10*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{"a@dest.example": "orig\r\n", "rewrite@dest.example": "Subject: rewritten\r\n\r\nnew\r\n", "c@dest.example": "orig\r\n"}
	for r, suffix := range want {
		if !strings.HasSuffix(delivered[r], suffix) {
			t.Errorf("%s: delivered %q", r, delivered[r])
		}
	}
	if n := countSpool(t, ts.data); n != 0 {
		t.Errorf("data spool holds %d records after delivery, want 0", n)
	}
}
