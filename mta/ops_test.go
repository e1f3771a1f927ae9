package mta_test

import (
	"context"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A message deferred for an hour is made due now by a flush, durably:
// the new due time is in the meta spool, so it holds across a restart.
func TestRebindFlushIsDurable(t *testing.T) {
	e := startE2E(t, time.Hour, 24*time.Hour, smtpsink.Options{}, nil)
	e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("later"), Code: 451, Enhanced: smtp.EnhancedCode{4, 2, 0}, Text: "later", Times: 1})
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	id := sendMail(t, rc, "s@example.com", []string{"later@dest.test"}, testMessage("flush", "x"))[0]
	waitUntil(t, "transient failure", func() bool { return len(e.testServer.sink.OfType(logs.TransientFailure)) == 1 })
	e.srv.HoldDelivery()
	sid, err := spool.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	// The record is logged just before the retry is spooled and
	// rescheduled.
	var info *mta.MessageInfo
	waitUntil(t, "the retry to be spooled", func() bool {
		info, err = e.srv.InspectMessage(context.Background(), sid, false)
		return err == nil && info.NumAttempts == 1
	})
	if time.Until(info.Due) < 30*time.Minute || info.Queue != "dest.test" {
		t.Fatalf("before flush: %+v", info)
	}
	waitUntil(t, "Rebind to flush the message", func() bool {
		return e.srv.Rebind(mta.RebindRequest{Match: mta.QueueMatch{Domain: "dest.test"}, AlwaysFlush: true, Reason: "fixed"}) == 1
	})
	info, err = e.srv.InspectMessage(context.Background(), sid, false)
	if err != nil || time.Until(info.Due) > time.Second {
		t.Fatalf("after flush the spooled due time is %v (%v)", info.Due, err)
	}
	e.srv.ReleaseDelivery()
	waitUntil(t, "delivery after flush", func() bool { return e.sink.Count() == 1 })
	if _, err := e.srv.InspectMessage(context.Background(), sid, false); err == nil {
		t.Error("delivered message still inspectable")
	}
}

func TestRebindMovesAndSuspendReadyQueue(t *testing.T) {
	e := startE2E(t, time.Hour, 24*time.Hour, smtpsink.Options{}, nil)
	e.srv.HoldDelivery()
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	sendMail(t, rc, "s@example.com", []string{"a@dest.test"}, testMessage("m", "x"))
	sendMail(t, rc, "s@example.com", []string{"b@other.test"}, testMessage("m", "x"))
	n := e.srv.Rebind(mta.RebindRequest{Match: mta.QueueMatch{Domain: "dest.test"}, Meta: map[string]any{mta.MetaTenant: "t1"}})
	if got := e.srv.QueueSummary(); n != 1 || got["t1@dest.test"] != 1 || got["other.test"] != 1 || len(got) != 2 {
		t.Fatalf("after rebind (%d): %v", n, got)
	}
	if recs := e.testServer.sink.OfType(logs.AdminRebind); len(recs) != 1 || recs[0].Queue != "t1@dest.test" {
		t.Errorf("AdminRebind records %+v", recs)
	}

	// Both domains share the MX, so one ready queue; suspend it.
	name := "unspecified->mx.dest.test@smtp_client"
	rule := e.srv.SuspendReadyQueue(name, "peer trouble", time.Hour)
	if got := e.srv.ReadyQueueSuspensions(); len(got) != 1 || got[0].ID != rule.ID || got[0].Name != name {
		t.Fatalf("suspensions %+v", got)
	}
	e.srv.ReleaseDelivery()
	time.Sleep(300 * time.Millisecond)
	if e.sink.Count() != 0 {
		t.Fatalf("%d delivered through a suspended ready queue", e.sink.Count())
	}
	if e.srv.QueuedCount() != 2 || len(e.testServer.sink.OfType(logs.TransientFailure)) != 0 {
		t.Fatalf("held messages: %d queued, %d transient failures", e.srv.QueuedCount(), len(e.testServer.sink.OfType(logs.TransientFailure)))
	}
	if !e.srv.CancelReadyQueueSuspension(rule.ID) || e.srv.CancelReadyQueueSuspension(rule.ID) {
		t.Fatal("cancel: want true once")
	}
	waitUntil(t, "delivery after the suspension", func() bool { return e.sink.Count() == 2 })
}
