package mta_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
)

// chance returns a Matcher that matches a seeded random fraction p of the
// events it sees. Matchers run on the sink's connection goroutines.
func chance(p float64, seed uint64) smtpsink.Matcher {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed+1))
	return func(*smtpsink.Envelope) bool {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64() < p
	}
}

// Mixed faults at the destination: 4xx, 5xx and dropped connections at
// RCPT and at the end of DATA, drops in the middle of the data, stalls,
// and STARTTLS failures; fast retries and a short max_age so that some
// messages expire. Every accepted message must end in exactly one final
// log record (Delivery, Bounce or Expiration), reach the destination
// exactly once if and only if it was delivered, and leave the spool.
func TestMixedFaultReliability(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 60
	}
	start := time.Now()
	e := startE2E(t, 50*time.Millisecond, 3*time.Second, smtpsink.Options{
		TLS:       true,
		HangLimit: 5 * time.Second,
		Mix:       smtpsink.Mix{Stage: smtpsink.StageRcpt, TempFail: 0.15, PermFail: 0.05, Disconnect: 0.05, Seed: 4},
	}, func(pc *shaping.PathConfig) {
		pc.EnableTLS = shaping.OpportunisticInsecure // the sink's certificate names 127.0.0.1
		pc.BannerTimeout, pc.EHLOTimeout, pc.StartTLSTimeout = time.Second, time.Second, time.Second
		pc.MailFromTimeout, pc.RcptToTimeout, pc.DataTimeout, pc.DataDotTimeout = time.Second, time.Second, time.Second, time.Second
	})
	faults := []smtpsink.Fault{
		// A few stalls and STARTTLS failures, early on.
		{Stage: smtpsink.StageRcpt, Action: smtpsink.Hang, Times: 2},
		{Stage: smtpsink.StageData, Action: smtpsink.Hang, Times: 2},
		{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage, Times: 2},
		{Stage: smtpsink.StageStartTLS, Action: smtpsink.Disconnect, Times: 2},
		{Stage: smtpsink.StageStartTLS, Code: 421, Times: 2}, // a TLS alert
		{Stage: smtpsink.StageStartTLS, Action: smtpsink.Hang, Times: 1},
		// The Mix covers RCPT; these the data.
		{Stage: smtpsink.StageDataStart, Match: chance(0.03, 1), Action: smtpsink.Disconnect},
		{Stage: smtpsink.StageData, Match: chance(0.10, 2), Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}},
		{Stage: smtpsink.StageData, Match: chance(0.03, 3), Code: 554, Enhanced: smtp.EnhancedCode{5, 7, 1}},
		{Stage: smtpsink.StageData, Match: chance(0.05, 4), Action: smtpsink.Disconnect},
	}
	for _, f := range faults {
		e.sink.MustAddFault(f)
	}

	type sent struct{ key, rcpt string }
	msgs := map[string]sent{}
	rc := dialRaw(t, e.addr)
	ehlo(rc)
	for i := 0; i < n; i++ {
		// Every 25th recipient always gets a 451 (the sink's magic
		// "tempfail" local part) and must expire; another always gets
		// a 550 ("permfail") and must bounce.
		rcpt := fmt.Sprintf("r%d@dest.test", i)
		switch i % 25 {
		case 0:
			rcpt = fmt.Sprintf("tempfail%d@dest.test", i)
		case 12:
			rcpt = fmt.Sprintf("permfail%d@dest.test", i)
		}
		subject := fmt.Sprintf("rel%d", i)
		for _, id := range sendMail(t, rc, "s@example.com", []string{rcpt}, testMessage(subject, "x")) {
			msgs[id] = sent{key: "<" + subject + "@example.com>", rcpt: rcpt}
		}
	}
	if len(msgs) != n {
		t.Fatalf("%d messages accepted, want %d", len(msgs), n)
	}
	waitFor(t, "every message settled", 50*time.Second, func() bool { return e.srv.QueuedCount() == 0 })

	f := finals(e.testServer.sink)
	count := map[logs.RecordType]int{}
	for id, m := range msgs {
		got := f[id]
		if len(got) != 1 {
			t.Errorf("%s (%s): final records %v, want exactly one", id, m.rcpt, got)
			continue
		}
		count[got[0]]++
		copies := e.sink.DeliveryCount(m.key, m.rcpt)
		switch {
		case strings.HasPrefix(m.rcpt, "tempfail") && got[0] != logs.Expiration:
			t.Errorf("%s (%s): %s, want Expiration", id, m.rcpt, got[0])
		case strings.HasPrefix(m.rcpt, "permfail") && got[0] != logs.Bounce && got[0] != logs.Expiration:
			t.Errorf("%s (%s): %s, want Bounce (or Expiration, if only ever refused by other faults)", id, m.rcpt, got[0])
		case got[0] == logs.Delivery && copies != 1:
			t.Errorf("%s (%s): logged as delivered, destination has %d copies", id, m.rcpt, copies)
		case got[0] != logs.Delivery && copies != 0:
			t.Errorf("%s (%s): logged as %s, destination has %d copies", id, m.rcpt, got[0], copies)
		}
	}
	if len(f) != len(msgs) {
		t.Errorf("final records for %d messages, %d were sent", len(f), len(msgs))
	}
	if d := e.sink.Duplicates(); len(d) != 0 {
		t.Errorf("duplicates at the destination: %v", d)
	}
	if nd, ns := countSpool(t, e.data), countSpool(t, e.meta); nd+ns != 0 {
		t.Errorf("spool not empty: %d data, %d meta entries", nd, ns)
	}

	// The faults did happen, so the outcome means something.
	st := e.sink.Stats()
	tf := len(e.testServer.sink.OfType(logs.TransientFailure))
	t.Logf("%d messages in %v: %v; %d transient failures; sink %+v", n, time.Since(start).Round(time.Millisecond), count, tf, st)
	if count[logs.Delivery] < n/2 || count[logs.Bounce] < n/50 || count[logs.Expiration] < n/25 {
		t.Errorf("outcomes %v: want mostly deliveries, some bounces and expirations", count)
	}
	if st.TempFailures == 0 || st.PermFailures == 0 || st.Disconnects == 0 || st.Hangs == 0 || st.Garbage == 0 || tf < n/10 {
		t.Errorf("faults not exercised: %+v, %d transient failures", st, tf)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("took %v, the budget is 60s", d)
	}
}
