package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta/httpapi"
)

// cli runs a subcommand in-process against endpoint and returns its
// output.
func cli(t *testing.T, endpoint string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{args[0], "-endpoint", endpoint}, args[1:]...)
	if args[0] == "logs" {
		full = args
	}
	if err := run(full, &out, &errb); err != nil {
		t.Fatalf("mtakitd %v: %v %s", full, err, errb.String())
	}
	return out.String()
}

// send submits one message over SMTP.
func send(t *testing.T, addr, rcpt string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("sender@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: sender@example.com\r\nSubject: cli test\r\n\r\nbody\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func TestCLIAgainstRunningDaemon(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Store: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dataDir := t.TempDir()
	listen, httpAddr := freeAddr(t), freeAddr(t)
	d := startDaemon(t, dataDir, listen, sink.Addr(), "-http", httpAddr)
	defer d.close()
	api := "http://" + httpAddr
	logDir := filepath.Join(dataDir, "logs")
	waitUntil(t, "HTTP API", 10*time.Second, func() bool {
		resp, err := http.Get(api + "/api/check-liveness/v1")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	// suspend holds mail for the domain; queue-summary shows it waiting.
	if out := cli(t, api, "suspend", "-domain", "dest.example", "-reason", "maintenance", "-duration", "1h"); !strings.HasPrefix(out, "suspension ") {
		t.Fatalf("suspend: %q", out)
	}
	sent := time.Now()
	send(t, listen, "held@dest.example")
	// The Reception record is readable with "mtakitd logs" within 2 s.
	took := waitUntil(t, "Reception record in mtakitd logs", 5*time.Second, func() bool {
		return strings.Contains(cli(t, "", "logs", logDir), "Reception")
	})
	if d := time.Since(sent); d > 2*time.Second {
		t.Errorf("record readable %s after the event (polled for %s), want within 2s", d, took)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(cli(t, "", "logs", "-json", logDir)), "\n") {
		var rec struct{ Type, ID string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("logs -json line %q: %v", line, err)
		}
		ids = append(ids, rec.ID)
	}
	id := ids[0]

	summary := cli(t, api, "queue-summary")
	if !regexp.MustCompile(`(?m)^dest\.example\s+1$`).MatchString(summary) {
		t.Errorf("queue-summary:\n%s", summary)
	}
	var js httpapi.QueueSummary
	if err := json.Unmarshal([]byte(cli(t, api, "queue-summary", "-json")), &js); err != nil || len(js.Scheduled) != 1 {
		t.Errorf("queue-summary -json: %v %+v", err, js)
	}
	if out := cli(t, api, "inspect-message", "-body", id); !strings.Contains(out, "sender@example.com") || !strings.Contains(out, "Subject: cli test") || !strings.Contains(out, "dest.example") {
		t.Errorf("inspect-message:\n%s", out)
	}
	var sl []httpapi.SuspendEntry
	if err := json.Unmarshal([]byte(cli(t, api, "suspend-list", "-json")), &sl); err != nil || len(sl) != 1 {
		t.Fatalf("suspend-list -json: %v %+v", err, sl)
	}
	if out := cli(t, api, "suspend-list"); !strings.Contains(out, sl[0].ID) || !strings.Contains(out, "domain=dest.example") || !strings.Contains(out, "maintenance") {
		t.Errorf("suspend-list:\n%s", out)
	}
	time.Sleep(200 * time.Millisecond)
	if sink.Count() != 0 {
		t.Fatal("suspended mail was delivered")
	}
	cli(t, api, "suspend-cancel", sl[0].ID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sink.WaitCount(ctx, 1); err != nil {
		t.Fatal("not delivered after suspend-cancel:", err)
	}

	// bounce: new arrivals for the domain are bounced and logged.
	if out := cli(t, api, "bounce", "-domain", "gone.example", "-reason", "domain retired"); !strings.Contains(out, "bounce rule") {
		t.Fatalf("bounce: %q", out)
	}
	send(t, listen, "x@gone.example")
	waitUntil(t, "AdminBounce record", 5*time.Second, func() bool {
		return strings.Contains(cli(t, "", "logs", logDir), "AdminBounce")
	})
	bl := cli(t, api, "bounce-list")
	if !strings.Contains(bl, "domain=gone.example") || !regexp.MustCompile(`\s1\s+domain retired`).MatchString(bl) {
		t.Errorf("bounce-list:\n%s", bl)
	}

	// flush: a message deferred for 20 minutes by a 451 goes at once.
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("later"), Code: 451, Text: "try later", Times: 1})
	send(t, listen, "later@dest.example")
	waitUntil(t, "TransientFailure record", 10*time.Second, func() bool {
		return strings.Contains(cli(t, "", "logs", logDir), "TransientFailure")
	})
	// The record precedes the rescheduling by a moment: flush until the
	// message is found.
	waitUntil(t, "flush to find the message", 5*time.Second, func() bool {
		out := cli(t, api, "flush", "-domain", "dest.example")
		if out != "0 messages flushed\n" && out != "1 messages flushed\n" {
			t.Fatalf("flush: %q", out)
		}
		return out == "1 messages flushed\n"
	})
	if err := sink.WaitCount(ctx, 2); err != nil {
		t.Fatal("not delivered after flush:", err)
	}

	// /metrics parses and counts what happened (the Delivery record of
	// the flushed message follows the sink's 250 closely).
	var counts map[string]float64
	scrape := func() bool {
		resp, err := http.Get(api + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		counts = map[string]float64{}
		for _, m := range fams["mtakit_messages_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" {
					counts[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
		return counts["Reception"] == 3 && counts["Delivery"] == 2 && counts["AdminBounce"] == 1 && counts["TransientFailure"] == 1
	}
	deadline := time.Now().Add(5 * time.Second)
	for !scrape() {
		if time.Now().After(deadline) {
			t.Fatalf("metrics counts %v", counts)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Errors from the API reach the person at the shell.
	var errb bytes.Buffer
	err = run([]string{"bounce-cancel", "-endpoint", api, "no-such-id"}, io.Discard, &errb)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("bounce-cancel of an unknown id: %v", err)
	}
	err = run([]string{"queue-summary", "-endpoint", "http://" + freeAddr(t)}, io.Discard, &errb)
	if err == nil || !strings.Contains(err.Error(), "running with -http") {
		t.Errorf("no daemon: %v", err)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bounce", "-domain", "x"}, "-reason"},
		{[]string{"bounce", "-reason", "r"}, "-everything"},
		{[]string{"suspend", "-reason", "r"}, "-everything"},
		{[]string{"suspend-ready-q", "-reason", "r"}, "-name"},
		{[]string{"rebind", "-reason", "r"}, "-set"},
		{[]string{"rebind", "-reason", "r", "-set", "novalue"}, "key=value"},
		{[]string{"inspect-message"}, "message ID"},
		{[]string{"bounce-cancel"}, "rule ID"},
		{[]string{"logs", "a", "b"}, "at most one"},
		{[]string{"logs", filepath.Join(t.TempDir(), "missing")}, "missing"},
	}
	for _, tc := range tests {
		err := run(tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

// The webhook gets every record at least once although it is down while
// mtakitd runs and mtakitd restarts before it comes back.
func TestLogHookAcrossOutageAndRestart(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	hookAddr, listen, dataDir := freeAddr(t), freeAddr(t), t.TempDir()
	hookURL := "http://" + hookAddr + "/hook"
	d := startDaemon(t, dataDir, listen, sink.Addr(), "-log-hook", hookURL)
	for i := range 3 {
		send(t, listen, fmt.Sprintf("r%d@dest.example", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sink.WaitCount(ctx, 3); err != nil {
		t.Fatal(err)
	}
	d.close() // graceful restart while the receiver is still down

	type key struct{ typ, id string }
	var mu sync.Mutex
	seen := map[key]bool{}
	ln, err := net.Listen("tcp", hookAddr)
	if err != nil {
		t.Fatal(err)
	}
	hookSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var recs []struct{ Type, ID string }
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &recs); err != nil {
			t.Errorf("hook body %q: %v", b, err)
		}
		mu.Lock()
		for _, rec := range recs {
			seen[key{rec.Type, rec.ID}] = true
		}
		mu.Unlock()
	})}
	go hookSrv.Serve(ln)
	defer hookSrv.Close()
	d = startDaemon(t, dataDir, listen, sink.Addr(), "-log-hook", hookURL)
	defer d.close()
	waitUntil(t, "3 Reception and 3 Delivery records at the webhook", 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := map[string]int{}
		for k := range seen {
			n[k.typ]++
		}
		return n["Reception"] == 3 && n["Delivery"] == 3
	})
}

func TestLogHookFlag(t *testing.T) {
	received := make(chan []byte, 16)
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		received <- b
	}))
	defer hookSrv.Close()
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	listen := freeAddr(t)
	d := startDaemon(t, t.TempDir(), listen, sink.Addr(), "-log-hook", hookSrv.URL)
	defer d.close()
	send(t, listen, "r@dest.example")
	seen := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for !seen["Reception"] || !seen["Delivery"] {
		select {
		case b := <-received:
			var recs []struct{ Type string }
			if err := json.Unmarshal(b, &recs); err != nil {
				t.Fatalf("hook body %q: %v", b, err)
			}
			for _, r := range recs {
				seen[r.Type] = true
			}
		case <-timeout:
			t.Fatalf("log hook received %v", seen)
		}
	}
	if err := run([]string{"-log-hook", "ftp://x"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "-log-hook") {
		t.Errorf("bad -log-hook URL: %v", err)
	}
}
