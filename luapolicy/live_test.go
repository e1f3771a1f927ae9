package luapolicy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// A reload under load changes a tenant's queue configuration (its egress
// pool) for new mail; every accepted message is delivered, none lost, and
// a broken edit is refused with the running policy kept.
func TestReloadUnderLoad(t *testing.T) {
	e := newPolicyEnv(t, "testdata/helpers")
	l, err := luapolicy.LoadLive(filepath.Join(e.dir, "init.lua"), luapolicy.Options{DKIMKeyDir: filepath.Join(e.dir, "keys"), Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, addrs, err := l.Start(mta.Options{Hostname: "mx.policy.test", Logger: quietLogger, DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := addrs[0].String()

	var accepted atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := sendOne(addr, fmt.Sprintf("load %d-%d", c, i), "gold"); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				accepted.Add(1)
			}
		}()
	}
	waitFor(t, func() bool { return accepted.Load() >= 20 })

	qc, _ := l.MTAPolicy().QueueConfig("gold@dest.test", "", "gold", "dest.test", "")
	if qc.EgressPool != "pool-gold" {
		t.Fatalf("before reload: %+v", qc)
	}
	// A broken edit is refused and the running policy kept.
	queues := filepath.Join(e.dir, "queues.toml")
	orig, _ := os.ReadFile(queues)
	os.WriteFile(queues, []byte(strings.Replace(string(orig), "egress_pool = 'pool-gold'", "egress_pool = 'pool-gold'\nretry_interval = 'soon'", 1)), 0o644)
	if err := l.Reload(); err == nil || !strings.Contains(err.Error(), "queues.toml") {
		t.Fatalf("broken reload: %v", err)
	}
	if l.Epoch() != 1 {
		t.Fatalf("epoch %d after a failed reload", l.Epoch())
	}
	// The real change: tenant gold moves to pool-default.
	os.WriteFile(queues, []byte(strings.Replace(string(orig), "egress_pool = 'pool-gold'", "egress_pool = 'pool-default'", 1)), 0o644)
	if !l.Changed() {
		t.Fatal("Changed does not see the edit of queues.toml")
	}
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	qc, _ = l.MTAPolicy().QueueConfig("gold@dest.test", "", "gold", "dest.test", "")
	if qc.EgressPool != "pool-default" || l.Epoch() != 2 {
		t.Fatalf("after reload: %+v epoch %d", qc, l.Epoch())
	}
	before := accepted.Load()
	waitFor(t, func() bool { return accepted.Load() >= before+20 })
	close(stop)
	wg.Wait()
	if err := sendOne(addr, "after reload", "gold"); err != nil {
		t.Fatal(err)
	}
	accepted.Add(1)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, int(accepted.Load())); err != nil {
		t.Fatalf("accepted %d, sink has %d: %v", accepted.Load(), e.sink.Count(), err)
	}
	if n := e.sink.Count(); int64(n) != accepted.Load() {
		t.Errorf("sink has %d messages, %d accepted", n, accepted.Load())
	}
	for _, m := range e.sink.Messages() {
		if headerOf(m.Data, "Subject") == "after reload" && m.EHLO != "plain.sender.test" {
			t.Errorf("mail after the reload left by %q, want the pool-default source", m.EHLO)
		}
	}
}

func sendOne(addr, subject, tenant string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("sender@example.com", nil); err != nil {
		return err
	}
	if err := c.Rcpt("r@dest.test", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@example.com\r\nTo: r@dest.test\r\nSubject: %s\r\nX-Tenant: %s\r\n\r\nbody\r\n", subject, tenant)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
