package smtpsink

import (
	"context"
	"crypto/tls"
	"errors"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func waitActive(t *testing.T, s *Sink, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Wait(ctx, func(st Stats) bool { return st.ActiveConns == n }); err != nil {
		t.Fatalf("waiting for %d active connections: %v (stats %+v)", n, err, s.Stats())
	}
}

func TestMagicRecipients(t *testing.T) {
	s := startSink(t, Options{})
	c := dial(t, s)
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("user-tempfail@example.net", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("tempfail: %v", err)
	}
	err = c.Rcpt("PermFail@example.net", nil)
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("permfail: %v", err)
	}
	if err := c.Rcpt("ok@tempfail.example", nil); err != nil {
		t.Fatalf("domain is not the local part: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(testMessage("m", 100))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	wantConnError(t, "disconnect recipient", c.Rcpt("disconnect-me@example.net", nil))

	st := s.Stats()
	if st.Messages != 1 || st.Recipients != 1 || st.TempFailures != 1 || st.PermFailures != 1 || st.Disconnects != 1 {
		t.Errorf("stats %+v", st)
	}

	s2 := startSink(t, Options{DisableMagic: true})
	if _, err := send(dial(t, s2), "a@example.com", []string{"tempfail@example.net"}, testMessage("m", 100)); err != nil {
		t.Fatalf("DisableMagic: %v", err)
	}
}

func TestReplyFaultsAtEachStage(t *testing.T) {
	s := startSink(t, Options{})
	cases := []struct {
		stage Stage
		code  int
		enh   smtp.EnhancedCode
	}{
		{StageMail, 451, smtp.EnhancedCode{4, 7, 1}},
		{StageRcpt, 550, smtp.EnhancedCode{5, 1, 1}},
		{StageDataStart, 452, smtp.EnhancedCode{4, 3, 1}},
		{StageData, 554, smtp.EnhancedCode{5, 6, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.stage.String(), func(t *testing.T) {
			s.ClearFaults()
			id := s.MustAddFault(Fault{Stage: tc.stage, Code: tc.code, Enhanced: tc.enh, Text: "injected " + tc.stage.String()})
			c := dial(t, s)
			_, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("r", 200))
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enh || se.Message != "injected "+tc.stage.String() {
				t.Fatalf("err = %v, want %d %v", err, tc.code, tc.enh)
			}
			if s.FaultHits(id) != 1 {
				t.Errorf("hits = %d", s.FaultHits(id))
			}
			// The connection is still usable after a reply fault.
			s.ClearFaults()
			if err := c.Reset(); err != nil {
				t.Fatalf("RSET: %v", err)
			}
			if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("r2", 200)); err != nil {
				t.Fatalf("send after fault: %v", err)
			}
		})
	}
	if st := s.Stats(); st.Messages != int64(len(cases)) || st.TempFailures != 2 || st.PermFailures != 2 {
		t.Errorf("stats %+v", st)
	}

	t.Run("ehlo", func(t *testing.T) {
		s.MustAddFault(Fault{Stage: StageEHLO, Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 0}, Times: 1})
		if err := newClient(t, s).Hello("client.test"); smtpCode(err) != 421 {
			t.Fatalf("EHLO: %v", err)
		}
	})
	t.Run("connect", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageConnect, Code: 554, Enhanced: smtp.EnhancedCode{5, 3, 2}, Text: "go away", Times: 1})
		err := newClient(t, s).Hello("client.test")
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 554 || se.Message != "go away" {
			t.Fatalf("banner: %v", err)
		}
		dial(t, s) // Times: 1
	})
}

func TestFaultMatchAndTimes(t *testing.T) {
	s := startSink(t, Options{Store: true})
	id := s.MustAddFault(Fault{Stage: StageRcpt, Match: MatchRcpt("@slowdomain.test"), Code: 451, Times: 2})
	s.MustAddFault(Fault{Stage: StageMail, Match: MatchFrom("blocked"), Code: 550})
	s.MustAddFault(Fault{Stage: StageData, Match: MatchHeader("Subject", "REJECT ME"), Code: 554})
	s.MustAddFault(Fault{Stage: StageData, Match: MatchLocalPart("quota"), Code: 452, Enhanced: smtp.EnhancedCode{4, 2, 2}})
	c := dial(t, s)

	for i := range 2 {
		if _, err := send(c, "a@example.com", []string{"x@SlowDomain.test"}, testMessage("t", 100)); smtpCode(err) != 451 {
			t.Fatalf("attempt %d: %v", i, err)
		}
		_ = c.Reset()
	}
	if _, err := send(c, "a@example.com", []string{"x@slowdomain.test"}, testMessage("t", 100)); err != nil {
		t.Fatalf("third attempt (Times exhausted): %v", err)
	}
	if s.FaultHits(id) != 2 {
		t.Errorf("hits %d", s.FaultHits(id))
	}
	if !s.RemoveFault(id) || s.RemoveFault(id) || s.FaultHits(id) != 0 {
		t.Error("RemoveFault")
	}
	if _, err := send(c, "blocked@example.com", []string{"x@example.net"}, testMessage("t", 100)); smtpCode(err) != 550 {
		t.Fatalf("MatchFrom: %v", err)
	}
	_ = c.Reset()
	msg := []byte("Subject: please reject me now\r\n\r\nbody\r\n")
	if _, err := send(c, "a@example.com", []string{"x@example.net"}, msg); smtpCode(err) != 554 {
		t.Fatalf("MatchHeader: %v", err)
	}
	if _, err := send(c, "a@example.com", []string{"x@example.net", "overquota@example.net"}, testMessage("q", 100)); smtpCode(err) != 452 {
		t.Fatalf("MatchLocalPart at DATA: %v", err)
	}
	if s.Count() != 1 {
		t.Errorf("Count = %d, want 1", s.Count())
	}

	// A custom Matcher sees the envelope.
	s.ClearFaults()
	var seen Envelope
	s.MustAddFault(Fault{Stage: StageData, Match: func(e *Envelope) bool {
		seen = *e
		seen.To = append([]string(nil), e.To...)
		return false
	}})
	if _, err := send(c, "a@example.com", []string{"p@example.net", "q@example.net"}, testMessage("env", 100)); err != nil {
		t.Fatal(err)
	}
	if seen.Stage != StageData || seen.From != "a@example.com" || len(seen.To) != 2 || seen.EHLO != "client.test" ||
		seen.ConnSeq != 1 || seen.Txn != 7 || seen.Header("X-Test-Seq") != "env" || len(seen.Data()) == 0 {
		t.Errorf("envelope %+v", seen)
	}
}

func TestDisconnectFaults(t *testing.T) {
	s := startSink(t, Options{})
	msg := testMessage("d", 2000)
	t.Run("connect-no-banner", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageConnect, Action: Disconnect})
		wantConnError(t, "Hello", newClient(t, s).Hello("client.test"))
	})
	t.Run("connect-after-banner", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageConnect, Action: Disconnect, Code: 220, Text: s.Hostname() + " ESMTP"})
		wantConnError(t, "EHLO after banner", newClient(t, s).Hello("client.test"))
	})
	for _, st := range []Stage{StageEHLO, StageMail, StageRcpt, StageDataStart, StageData} {
		t.Run(st.String(), func(t *testing.T) {
			s.ClearFaults()
			s.MustAddFault(Fault{Stage: st, Action: Disconnect})
			c := newClient(t, s)
			err := c.Hello("client.test")
			if err == nil {
				_, err = send(c, "a@example.com", []string{"b@example.net"}, msg)
			}
			wantConnError(t, st.String(), err)
		})
	}
	t.Run("421-then-close", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageRcpt, Action: Disconnect, Code: 421, Enhanced: smtp.EnhancedCode{4, 4, 2}, Text: "closing"})
		c := dial(t, s)
		_, err := send(c, "a@example.com", []string{"b@example.net"}, msg)
		if smtpCode(err) != 421 {
			t.Fatalf("err = %v, want 421", err)
		}
		wantConnError(t, "after 421", c.Noop())
	})
	s.ClearFaults()
	waitActive(t, s, 0)
	if st := s.Stats(); st.Messages != 0 || st.Disconnects != 8 {
		t.Errorf("stats %+v", st)
	}
}

func TestDeliverThenDisconnectMakesDuplicate(t *testing.T) {
	s := startSink(t, Options{KeyHeader: "X-Test-Seq"})
	s.MustAddFault(Fault{Stage: StageData, Action: Disconnect, Deliver: true, Times: 1})
	msg := testMessage("42", 500)
	_, err := send(dial(t, s), "a@example.com", []string{"b@example.net"}, msg)
	wantConnError(t, "lost reply", err)
	if s.Count() != 1 {
		t.Fatalf("Count = %d, want 1 (delivered before the drop)", s.Count())
	}
	// The client retries: now a duplicate.
	if _, err := send(dial(t, s), "a@example.com", []string{"b@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	if d := s.Duplicates(); len(d) != 1 || d[0].Key != "42" || d[0].Count != 2 {
		t.Fatalf("Duplicates = %+v", d)
	}

	// Deliver with a 4xx reply: queued, but the client is told to retry.
	s.MustAddFault(Fault{Stage: StageData, Code: 451, Deliver: true, Times: 1})
	if _, err := send(dial(t, s), "a@example.com", []string{"c@example.net"}, msg); smtpCode(err) != 451 {
		t.Fatalf("err = %v", err)
	}
	if s.DeliveryCount("42", "c@example.net") != 1 {
		t.Error("451 with Deliver did not record the message")
	}
}

func TestGarbageFaults(t *testing.T) {
	s := startSink(t, Options{})
	var pe textproto.ProtocolError
	t.Run("banner", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageConnect, Action: Garbage})
		err := newClient(t, s).Hello("client.test")
		if !errors.As(err, &pe) {
			t.Fatalf("err = %v (%T), want a protocol error", err, err)
		}
	})
	t.Run("rcpt", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageRcpt, Action: Garbage, Text: "HTTP/1.1 400 Bad Request\r\n\r\n"})
		c := dial(t, s)
		_, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("g", 100))
		if !errors.As(err, &pe) {
			t.Fatalf("err = %v (%T), want a protocol error", err, err)
		}
	})
	t.Run("data", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageData, Action: Garbage})
		_, err := send(dial(t, s), "a@example.com", []string{"b@example.net"}, testMessage("g", 100))
		if err == nil || smtpCode(err) != 0 {
			t.Fatalf("err = %v, want a non-SMTP error", err)
		}
	})
	if st := s.Stats(); st.Garbage != 3 || st.Messages != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestHangFaults(t *testing.T) {
	s := startSink(t, Options{})
	short := 300 * time.Millisecond
	t.Run("banner", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageConnect, Action: Hang})
		c := newClient(t, s)
		c.CommandTimeout = short
		if err := c.Hello("client.test"); !isTimeout(err) {
			t.Fatalf("err = %v, want timeout", err)
		}
	})
	t.Run("rcpt", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageRcpt, Action: Hang})
		c := dial(t, s)
		c.CommandTimeout = short
		if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("h", 100)); !isTimeout(err) {
			t.Fatalf("err = %v, want timeout", err)
		}
	})
	t.Run("data-dot", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageData, Action: Hang})
		c := dial(t, s)
		c.SubmissionTimeout = short
		if _, err := send(c, "a@example.com", []string{"b@example.net"}, testMessage("h", 4000)); !isTimeout(err) {
			t.Fatalf("err = %v, want timeout", err)
		}
		_ = c.Close()
	})
	s.ClearFaults()
	if st := s.Stats(); st.Hangs != 3 || st.Messages != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestHangLimitReleasesConnection(t *testing.T) {
	s := startSink(t, Options{HangLimit: 200 * time.Millisecond})
	s.MustAddFault(Fault{Stage: StageMail, Action: Hang})
	c := dial(t, s)
	start := time.Now()
	err := c.Mail("a@example.com", nil)
	wantConnError(t, "MAIL after HangLimit", err)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("returned after %v, before HangLimit", d)
	}
	waitActive(t, s, 0)
}

func TestDelayFaults(t *testing.T) {
	s := startSink(t, Options{})
	delay := 150 * time.Millisecond
	s.MustAddFault(Fault{Stage: StageConnect, Delay: delay})
	s.MustAddFault(Fault{Stage: StageRcpt, Delay: delay})
	s.MustAddFault(Fault{Stage: StageData, Delay: delay, Code: 451})
	start := time.Now()
	c := dial(t, s)
	if d := time.Since(start); d < delay {
		t.Errorf("banner after %v, want >= %v", d, delay)
	}
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := c.Rcpt("b@example.net", nil); err != nil {
		t.Fatalf("slow RCPT: %v", err)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("RCPT after %v, want >= %v", d, delay)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(testMessage("slow", 100))
	start = time.Now()
	if _, err := w.CloseWithResponse(); smtpCode(err) != 451 {
		t.Fatalf("slow 451: %v", err)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("DATA reply after %v, want >= %v", d, delay)
	}
	if st := s.Stats(); st.Delays != 2 || st.TempFailures != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSTARTTLSFaults(t *testing.T) {
	s := startSink(t, Options{TLS: true})
	short := 300 * time.Millisecond
	t.Run("garbage", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageStartTLS, Action: Garbage})
		_, err := dialTLS(t, s, testTimeout)
		var rh tls.RecordHeaderError
		if !errors.As(err, &rh) {
			t.Fatalf("err = %v (%T), want tls.RecordHeaderError", err, err)
		}
	})
	t.Run("disconnect", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageStartTLS, Action: Disconnect})
		_, err := dialTLS(t, s, testTimeout)
		wantConnError(t, "handshake", err)
	})
	t.Run("hang", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageStartTLS, Action: Hang})
		_, err := dialTLS(t, s, short)
		if !isTimeout(err) {
			t.Fatalf("err = %v, want timeout", err)
		}
	})
	t.Run("alert", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageStartTLS, Code: 454})
		_, err := dialTLS(t, s, testTimeout)
		if err == nil || !strings.Contains(err.Error(), "remote error") {
			t.Fatalf("err = %v, want a TLS alert", err)
		}
	})
	t.Run("slow-then-ok", func(t *testing.T) {
		s.ClearFaults()
		s.MustAddFault(Fault{Stage: StageStartTLS, Delay: 100 * time.Millisecond})
		if _, err := dialTLS(t, s, testTimeout); err != nil {
			t.Fatalf("slow handshake: %v", err)
		}
	})
}

func TestMixIsSeededAndCounted(t *testing.T) {
	mix := Mix{TempFail: 0.2, PermFail: 0.1, Seed: 7}
	run := func() string {
		s := startSink(t, Options{Mix: mix})
		c := dial(t, s)
		var out strings.Builder
		if err := c.Mail("a@example.com", nil); err != nil {
			t.Fatal(err)
		}
		temp, perm := 0, 0
		for i := range 300 {
			err := c.Rcpt("r"+strconv.Itoa(i)+"@example.net", nil)
			switch code := smtpCode(err); {
			case err == nil:
				out.WriteByte('.')
			case code == 451:
				temp++
				out.WriteByte('t')
			case code == 550:
				perm++
				out.WriteByte('p')
			default:
				t.Fatalf("rcpt %d: %v", i, err)
			}
		}
		if temp < 30 || temp > 90 || perm < 10 || perm > 55 {
			t.Errorf("temp %d perm %d out of 300", temp, perm)
		}
		if st := s.Stats(); st.TempFailures != int64(temp) || st.PermFailures != int64(perm) {
			t.Errorf("stats %+v vs temp %d perm %d", st, temp, perm)
		}
		return out.String()
	}
	if a, b := run(), run(); a != b {
		t.Errorf("same seed, different outcomes:\n%s\n%s", a, b)
	}

	bad := []Mix{{TempFail: 0.7, PermFail: 0.7}, {TempFail: -1}, {Stage: StageConnect, TempFail: 0.1}}
	s := startSink(t, Options{})
	for _, m := range bad {
		if err := s.SetMix(m); err == nil {
			t.Errorf("SetMix(%+v) accepted", m)
		}
	}
	if err := s.SetMix(Mix{Stage: StageData, Disconnect: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := send(dial(t, s), "a@example.com", []string{"b@example.net"}, testMessage("x", 100))
	wantConnError(t, "mix disconnect", err)
	if err := s.SetMix(Mix{}); err != nil {
		t.Fatal(err)
	}
	if _, err := send(dial(t, s), "a@example.com", []string{"b@example.net"}, testMessage("x", 100)); err != nil {
		t.Fatalf("after mix off: %v", err)
	}
}

func TestFaultValidation(t *testing.T) {
	s := startSink(t, Options{})
	bad := []Fault{
		{},
		{Stage: stageEnd},
		{Stage: StageRcpt, Action: actionEnd},
		{Stage: StageRcpt, Code: 250},
		{Stage: StageRcpt, Code: 600},
		{Stage: StageRcpt, Action: Disconnect, Code: 100},
		{Stage: StageRcpt, Deliver: true},
		{Stage: StageRcpt, Times: -1},
		{Stage: StageRcpt, Delay: -time.Second},
		{Stage: StageRcpt, Code: 451, Text: "two\r\nlines"},
	}
	for _, f := range bad {
		if _, err := s.AddFault(f); err == nil {
			t.Errorf("AddFault(%+v) accepted", f)
		}
	}
	if s.hasFaults() {
		t.Error("invalid faults were added")
	}
}

// TestConcurrentMixedFaults runs 25 clients against a sink with a random
// mix and a fault toggled at run time, and checks that every message is
// accounted for: what the clients saw accepted is what the sink counted, and
// every refusal and drop the clients saw is in the sink's stats.
func TestConcurrentMixedFaults(t *testing.T) {
	s := startSink(t, Options{
		KeyHeader: "X-Test-Seq",
		Mix:       Mix{Stage: StageData, TempFail: 0.1, PermFail: 0.05, Disconnect: 0.05, Seed: 1},
	})
	const clients, perClient = 25, 20
	var accepted, rcpts, refused, dropped atomic.Int64
	stop := make(chan struct{})
	togglerDone := make(chan struct{})
	go func() {
		defer close(togglerDone)
		for i := 0; i < 10000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if i%2 == 0 {
				s.MustAddFault(Fault{Stage: StageRcpt, Match: MatchLocalPart("toggle"), Code: 452})
			} else {
				s.ClearFaults()
			}
		}
	}()

	var wg sync.WaitGroup
	for g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtp.Client
			for i := range perClient {
				if c == nil {
					var err error
					if c, err = tryDial(s); err != nil {
						t.Errorf("dial: %v", err)
						return
					}
				}
				to := []string{"u" + strconv.Itoa(g) + "@example.net"}
				if i%3 == 0 {
					to = append(to, "toggle"+strconv.Itoa(i)+"@example.net")
				}
				seq := strconv.Itoa(g*perClient + i)
				_, err := send(c, "a@example.com", to, testMessage(seq, 1000))
				switch {
				case err == nil:
					accepted.Add(1)
					rcpts.Add(int64(len(to)))
				case smtpCode(err) >= 400:
					refused.Add(1)
					if err := c.Reset(); err != nil {
						t.Errorf("RSET: %v", err)
						return
					}
				default:
					dropped.Add(1)
					_ = c.Close()
					c = nil
				}
			}
			if c != nil {
				_ = c.Quit()
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-togglerDone

	waitActive(t, s, 0)
	st := s.Stats()
	total := accepted.Load() + refused.Load() + dropped.Load()
	if total != clients*perClient {
		t.Fatalf("client outcomes %d, want %d", total, clients*perClient)
	}
	if st.Messages != accepted.Load() || st.Recipients != rcpts.Load() {
		t.Errorf("sink counted %d messages/%d rcpts, clients saw %d/%d", st.Messages, st.Recipients, accepted.Load(), rcpts.Load())
	}
	if st.TempFailures+st.PermFailures != refused.Load() || st.Disconnects != dropped.Load() {
		t.Errorf("sink faults %+v; clients refused %d dropped %d", st, refused.Load(), dropped.Load())
	}
	if st.Duplicates != 0 || st.PeakConns < 2 {
		t.Errorf("stats %+v", st)
	}
	if refused.Load() == 0 || dropped.Load() == 0 {
		t.Errorf("mix produced no faults: refused %d dropped %d", refused.Load(), dropped.Load())
	}
}

// TestCloseWithOpenConnections closes the sink while clients are idle,
// hung at end of DATA and delayed at RCPT: Close must return promptly and the
// clients must see their connections end.
func TestCloseWithOpenConnections(t *testing.T) {
	s, err := Start(Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	hang := s.MustAddFault(Fault{Stage: StageData, Match: MatchRcpt("hang"), Action: Hang})
	slow := s.MustAddFault(Fault{Stage: StageRcpt, Match: MatchRcpt("slow"), Delay: time.Hour})
	for range 3 {
		dial(t, s) // idle after EHLO
	}
	if _, err := dialTLS(t, s, testTimeout); err != nil { // idle on TLS
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, rcpt := range []string{"hang@example.net", "slow@example.net"} {
		c := dial(t, s)
		go func() {
			_, err := send(c, "a@example.com", []string{rcpt}, testMessage("c", 500))
			errs <- err
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Wait(ctx, func(Stats) bool { return s.FaultHits(hang) == 1 && s.FaultHits(slow) == 1 }); err != nil {
		t.Fatalf("clients did not reach their faults: %v", err)
	}

	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if st := s.Stats(); st.ActiveConns != 0 {
		t.Errorf("%d connections open after Close", st.ActiveConns)
	}
	for range 2 {
		select {
		case err := <-errs:
			wantConnError(t, "client of closed sink", err)
		case <-time.After(testTimeout):
			t.Fatal("client still blocked after Close")
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
