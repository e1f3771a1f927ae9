package luapolicy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// log_hooks:new_json POSTs every log record as JSON through mta/loghooks;
// a failed POST is retried after queue_config's retry_interval.
func TestLogHookNewJSON(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	calls := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			http.Error(w, "not now", http.StatusInternalServerError)
			return
		}
		var rec map[string]any
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &rec) != nil {
			t.Errorf("hook got %q %q", r.Header.Get("Content-Type"), b)
		}
		got = append(got, rec)
	}))
	defer hook.Close()
	src := fmt.Sprintf(`
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_json {
  name = 'webhook',
  url = %q,
  log_parameters = { headers = { 'Subject' } },
  queue_config = { retry_interval = '50ms', max_retry_interval = '100ms' },
}
`, hook.URL)
	dir := t.TempDir()
	path := filepath.Join(dir, "init.lua")
	os.WriteFile(path, []byte(src), 0o644)
	p, err := luapolicy.Load(path, luapolicy.Options{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if h := p.LogHooks(); len(h) != 1 || h[0].Name != "webhook" {
		t.Fatalf("log hooks %+v", h)
	}
	srv, _, err := p.Start(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), HoldDelivery: true, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "a@example.com", Recipients: []string{"b@example.net"},
			Data: []byte(fmt.Sprintf("From: a@example.com\r\nSubject: s%d\r\n\r\nbody\r\n", i))}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hook received %d records, want 3", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	if calls != 4 || len(got) != 3 {
		t.Fatalf("%d POSTs, %d records; want 4 (one retried) and 3", calls, len(got))
	}
	for _, rec := range got {
		h, _ := rec["headers"].(map[string]any)
		if rec["type"] != "Reception" || h["Subject"] == nil {
			t.Errorf("record %v", rec)
		}
	}
}
