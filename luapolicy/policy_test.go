package luapolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// writePolicy writes src as init.lua (plus extra files) in a temporary
// directory and returns its path.
func writePolicy(t testing.TB, src string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "init.lua")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadErrorsNameFileLineAndParameter(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"syntax", "local kumo = require 'kumo'\nkumo.on('init', function(\n", []string{"init.lua:", "syntax error"}},
		{"runtime", "local x = nil\n\nx.y = 1\n", []string{"init.lua:3:", "attempt to index"}},
		{"unknown kumo function", "local kumo = require 'kumo'\nkumo.frobnicate {}\n", []string{"init.lua:2:", "kumo.frobnicate is not provided by mtakit"}},
		{"unknown dkim function", "kumo.dkim.sha1_signer {}\n", []string{"init.lua:1:", "kumo.dkim.sha1_signer"}},
		{"unknown parameter", "kumo.on('init', function()\n  kumo.start_esmtp_listener {\n    listen = '127.0.0.1:0',\n    relay_hostz = {},\n  }\nend)\n",
			[]string{"init.lua:2:", "kumo.start_esmtp_listener", `unknown parameter "relay_hostz"`}},
		{"bad duration", "local q = kumo.make_queue_config { retry_interval = '5 minits' }\n",
			[]string{"init.lua:1:", `parameter "retry_interval"`, `"minits"`}},
		{"bad enum", "kumo.on('init', function() kumo.start_esmtp_listener { batch_handling = 'Sometimes' } end)\n",
			[]string{"init.lua:1:", `"batch_handling"`, "BatchByDomain"}},
		{"bad size", "kumo.on('init', function()\n kumo.start_esmtp_listener { max_message_size = 'big' }\nend)\n",
			[]string{"init.lua:2:", `"max_message_size"`, "invalid size"}},
		{"missing required", "kumo.on('init', function()\n\n kumo.define_spool { name = 'data' }\nend)\n",
			[]string{"init.lua:3:", `parameter "path": required`}},
		{"wrong type", "kumo.make_listener_domain { relay_to = 'yes' }\n", []string{"init.lua:1:", `"relay_to"`, "true or false"}},
		{"single event twice", "kumo.on('get_egress_path_config', function() end)\nkumo.on('get_egress_path_config', function() end)\n",
			[]string{"init.lua:2:", "already has a handler"}},
		{"error in init event", "kumo.on('init', function()\n  error('boom')\nend)\n", []string{"init.lua:2:", "boom"}},
		{"helper twice", "local l = require 'policy-extras.listener_domains'\nl:setup{'d.toml'}\nl:setup{'d.toml'}\n",
			[]string{"init.lua:3:", "already been configured"}},
		{"helper file error", "local l = require 'policy-extras.listener_domains'\nkumo.on('get_listener_domain', l:setup{'bad.toml'})\n",
			[]string{"init.lua:2:", `bad.toml:1: ["example.com"]`, `unknown parameter "relay_too"`}},
		{"unsupported", "kumo.configure_redis_throttles { node = 'redis://x' }\n", []string{"init.lua:1:", "not supported by mtakit"}},
	}
	files := map[string]string{
		"d.toml":   "[\"example.com\"]\nrelay_to = true\n",
		"bad.toml": "[\"example.com\"]\nrelay_too = true\n",
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writePolicy(t, tc.src, files)
			_, err := Load(path, Options{})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	src := `local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '/tmp/x', kind = 'Floppy' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', max_recipients_per_message = 'many' }
  kumo.configure_local_logs { log_dir = '/tmp/logs', max_segment_duration = 'soon' }
end)
local q = kumo.make_queue_config { max_age = '3 dayz' }
`
	path := writePolicy(t, src, nil)
	_, err := Load(path, Options{Check: true})
	var ce *CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *CheckError", err)
	}
	// Top-level code runs before the init event.
	want := []string{"init.lua:7:", "init.lua:3:", "init.lua:4:", "init.lua:5:"}
	if len(ce.Errors) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(ce.Errors), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(ce.Errors[i].Error(), w) {
			t.Errorf("error %d %q does not name %s", i, ce.Errors[i], w)
		}
	}

	// A clean policy passes the check.
	ok := writePolicy(t, "kumo.on('init', function() kumo.start_esmtp_listener { listen = '127.0.0.1:0' } end)\n", nil)
	if _, err := Load(ok, Options{Check: true}); err != nil {
		t.Fatalf("clean policy: %v", err)
	}
}

// Durations are KumoMTA's (through shaping.ParseDuration) or a number of
// seconds; sizes take units.
func TestDurationAndSizeParameters(t *testing.T) {
	durations := []struct {
		in   any
		want time.Duration
	}{
		{"5 minutes", 5 * time.Minute}, {"1m", time.Minute}, {"90s", 90 * time.Second}, {"2 hours", 2 * time.Hour},
		{"1h 30m", 90 * time.Minute}, {"3 days", 72 * time.Hour}, {"17 mins", 17 * time.Minute}, {int64(10), 10 * time.Second},
		{"200ms", 200 * time.Millisecond}, {1.5, 1500 * time.Millisecond},
	}
	for _, tc := range durations {
		f := newFields("test", map[string]any{"d": tc.in})
		var got time.Duration
		if !f.duration("d", &got) || got != tc.want || f.done() != nil {
			t.Errorf("duration %v = %v, %v; want %v", tc.in, got, f.done(), tc.want)
		}
	}
	for _, bad := range []any{"", "five minutes", "5 parsecs", "10", true} {
		f := newFields("test", map[string]any{"d": bad})
		var got time.Duration
		if f.duration("d", &got) || f.done() == nil {
			t.Errorf("duration %#v accepted as %v", bad, got)
		}
	}
	sizes := []struct {
		in   string
		want int64
	}{{"20MiB", 20 << 20}, {"128 KiB", 128 << 10}, {"1_000_000", 1000000}, {"10mb", 10000000}, {"42", 42}}
	for _, tc := range sizes {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := ParseSize("lots"); err == nil {
		t.Error("ParseSize(lots) succeeded")
	}
}

// countingLogger counts kumo.log_info calls.
type countingLogger struct{ n atomic.Int64 }

func (c *countingLogger) Enabled(context.Context, slog.Level) bool  { return true }
func (c *countingLogger) Handle(context.Context, slog.Record) error { c.n.Add(1); return nil }
func (c *countingLogger) WithAttrs([]slog.Attr) slog.Handler        { return c }
func (c *countingLogger) WithGroup(string) slog.Handler             { return c }

func TestLookupsAreMemoizedPerArguments(t *testing.T) {
	src := `
kumo.on('get_queue_config', function(domain, tenant, campaign, routing)
  kumo.log_info('get_queue_config', domain, tenant)
  if tenant == 'slow' then
    return kumo.make_queue_config { retry_interval = '1 hour', refresh_interval = '10 seconds' }
  end
  return kumo.make_queue_config { retry_interval = '5 minutes', egress_pool = tenant }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  kumo.log_info('get_egress_path_config', domain)
  return kumo.make_egress_path { connection_limit = '1_000', max_message_rate = '100/s', enable_tls = 'Required' }
end)
`
	counter := &countingLogger{}
	p, err := Load(writePolicy(t, src, nil), Options{Logger: slog.New(counter), States: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	nowFunc = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	defer func() { nowFunc = time.Now }()
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	for range 5 {
		qc, err := p.QueueConfig("t1@a.example", "", "t1", "a.example", "")
		if err != nil || qc.RetryInterval != 5*time.Minute || qc.EgressPool != "t1" {
			t.Fatalf("QueueConfig = %+v, %v", qc, err)
		}
	}
	if n := counter.n.Load(); n != 1 {
		t.Fatalf("handler ran %d times for one argument tuple, want 1", n)
	}
	p.QueueConfig("t2@a.example", "", "t2", "a.example", "")
	p.QueueConfig("slow@a.example", "", "slow", "a.example", "")
	if n := counter.n.Load(); n != 3 {
		t.Fatalf("handler ran %d times for three tuples, want 3", n)
	}
	advance(15 * time.Second) // past the refresh_interval of "slow" only
	p.QueueConfig("t1@a.example", "", "t1", "a.example", "")
	p.QueueConfig("slow@a.example", "", "slow", "a.example", "")
	if n := counter.n.Load(); n != 4 {
		t.Fatalf("after 15 s the handler ran %d times, want 4 (only the 10 s entry refreshed)", n)
	}
	advance(time.Minute) // past the default refresh_interval
	p.QueueConfig("t1@a.example", "", "t1", "a.example", "")
	if n := counter.n.Load(); n != 5 {
		t.Fatalf("after the default refresh interval the handler ran %d times, want 5", n)
	}

	pc, err := p.PathConfig(context.Background(), "src", "site", "a.example")
	if err != nil || pc.ConnectionLimit != 1000 || pc.MaxMessageRate != "100/s" || pc.EnableTLS != "Required" || pc.SMTPPort != 25 {
		t.Fatalf("PathConfig = %+v, %v", pc, err)
	}
	p.PathConfig(context.Background(), "src", "site", "a.example")
	if n := counter.n.Load(); n != 6 {
		t.Fatalf("path handler ran %d times in total, want 6", n)
	}
}

// runPolicyOnMessage injects msg through a server whose MessageReceived
// hook is the policy's and returns the delivered data (or the injection
// error).
func runPolicyOnMessage(t testing.TB, p *Policy, msg string) ([]byte, error) {
	t.Helper()
	delivered := make(chan []byte, 1)
	srv, err := mta.New(mta.Options{
		DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), Hostname: "mx.test",
		Logger: slog.New(slog.NewTextHandler(discard{}, nil)),
		Policy: mta.Policy{
			MessageReceived: p.MessageReceived,
			QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
				return mta.QueueConfig{Protocol: mta.Protocol{Deliver: func(_ context.Context, d *mta.Delivery) error {
					delivered <- d.Data
					return nil
				}}}, nil
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.test"},
		Data: []byte(strings.ReplaceAll(msg, "\n", "\r\n")), Protocol: "ESMTP"})
	if err != nil {
		return nil, err
	}
	select {
	case d := <-delivered:
		return d, nil
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}
	return nil, nil
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func TestMessageObject(t *testing.T) {
	src := `
kumo.on('smtp_server_message_received', function(msg)
  if msg:get_first_named_header_value('Subject') == 'reject me' then
    kumo.reject(552, '5.6.0 go away')
  end
  assert(#msg:id() == 32, 'id')
  assert(msg:sender().email == 's@example.com' and msg:sender().domain == 'example.com' and msg:sender().user == 's', 'sender')
  assert(tostring(msg:recipient()) == 'r@dest.test' and msg:recipient().domain == 'dest.test', 'recipient')
  assert(msg:from_header().domain == 'example.com', 'from_header')
  assert(msg:get_first_named_header_value('subject') == 'hello world', 'folded subject')
  local all = msg:get_all_named_header_values('X-Multi')
  assert(#all == 2 and all[1] == 'one' and all[2] == 'two', 'all values')
  assert(msg:get_first_named_header_value('Nope') == nil, 'absent header')
  msg:import_x_headers()
  assert(msg:get_meta('x_customer_id') == '42', 'import_x_headers')
  msg:import_x_headers({'X-Multi'})
  msg:set_meta('x_table', { a = 1, list = { 'p', 'q' } })
  local t = msg:get_meta('x_table')
  assert(t.a == 1 and t.list[2] == 'q', 'meta round trip')
  msg:remove_x_headers({'X-Customer-ID'})
  msg:remove_all_named_headers('X-Multi')
  msg:append_header('X-Appended', 'last')
  msg:prepend_header('X-Prepended', 'first')
  assert(msg:check_fix_conformance('NON_CANONICAL_LINE_ENDINGS', '') == nil, 'conformance')
  local data = msg:get_data()
  assert(data:find('Hello body', 1, true), 'get_data')
end)
`
	p, err := Load(writePolicy(t, src, nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	msg := "X-Customer-ID: 42\nFrom: S <s@example.com>\nSubject: hello\n world\nX-Multi: one\nX-Multi: two\nX-Keep: yes\n\nHello body\n"
	data, err := runPolicyOnMessage(t, p, msg)
	if err != nil {
		t.Fatal(err)
	}
	got := string(data)
	for _, want := range []string{"X-Prepended: first\r\n", "X-Keep: yes\r\nX-Appended: last\r\n\r\nHello body"} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, got)
		}
	}
	for _, gone := range []string{"X-Customer-ID", "X-Multi"} {
		if strings.Contains(got, gone) {
			t.Errorf("delivered message still has %s:\n%s", gone, got)
		}
	}

	_, err = runPolicyOnMessage(t, p, "From: s@example.com\nSubject: reject me\n\nbody\n")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) || se.Message != "go away" {
		t.Fatalf("kumo.reject: got %v, want 552 5.6.0 go away", err)
	}
}

func TestStatesAreUsedConcurrently(t *testing.T) {
	src := `
local n = 0
kumo.on('get_listener_domain', function(domain)
  n = n + 1
  if domain:match('%.relay%.test$') then return kumo.make_listener_domain { relay_to = true } end
end)
kumo.on('smtp_server_message_received', function(msg)
  n = n + 1
  msg:set_meta('tenant', msg:get_first_named_header_value('X-Tenant'))
end)
`
	p, err := Load(writePolicy(t, src, nil), Options{States: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				d, err := p.LookupListenerDomain(context.Background(), fmt.Sprintf("d%d-%d.relay.test", g, i), "127.0.0.1:25")
				if err != nil || d == nil || !d.RelayTo {
					errs <- fmt.Errorf("lookup: %+v %v", d, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(p.states); n > 4 {
		t.Errorf("%d states pooled, want at most 4", n)
	}
}

// The constructors hand their parameters to the Go loaders of the same
// settings (mta/queues, egress, shaping) and report the parameter.
func TestConstructorErrors(t *testing.T) {
	tests := []struct {
		fn     func(any) error
		params map[string]any
		want   string
	}{
		{queueErr, map[string]any{"retry_intervl": "5m"}, `kumo.make_queue_config: unknown parameter "retry_intervl"`},
		{queueErr, map[string]any{"max_age": "x"}, `kumo.make_queue_config: parameter "max_age": invalid duration "x"`},
		{queueErr, map[string]any{"protocol": map[string]any{"maildir_path": "x"}}, `parameter "protocol`},
		{queueErr, map[string]any{"egress_pool": int64(3)}, `parameter "egress_pool"`},
		{sourceErr, map[string]any{"name": "a", "source_addres": "1"}, `kumo.make_egress_source: unknown parameter "source_addres"`},
		{sourceErr, map[string]any{"name": "a", "source_address": "x"}, `parameter "source_address": invalid IP address "x"`},
		{sourceErr, map[string]any{"source_address": "10.0.0.1"}, `parameter "name": required`},
		{pathErr, map[string]any{"connection_limt": int64(1)}, `kumo.make_egress_path: unknown parameter "connection_limt"`},
		{pathErr, map[string]any{"max_message_rate": "fast"}, `parameter "max_message_rate"`},
		{pathErr, map[string]any{"enable_tls": "Sometimes"}, `parameter "enable_tls": invalid value "Sometimes"`},
	}
	for _, tc := range tests {
		err := tc.fn(tc.params)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.params, err, tc.want)
		}
	}
	pv, err := newEgressPath(map[string]any{"idle_timeout": "200ms", "prohibited_hosts": []any{}, "refresh_interval": "10s", "enable_dane": true})
	if err != nil || pv.cfg.IdleTimeout != 200*time.Millisecond || pv.cfg.ProhibitedHosts == nil || len(pv.cfg.ProhibitedHosts) != 0 || pv.refresh != 10*time.Second {
		t.Fatalf("make_egress_path: %+v %v", pv, err)
	}
	sv, err := newEgressSource(map[string]any{"name": "ip-1", "source_address": "10.0.0.1", "ehlo_domain": "mta1.example.com", "ttl": "5 minutes"})
	if err != nil || sv.src.Name() != "ip-1" || sv.src.EHLODomain() != "mta1.example.com" || sv.ttl != 5*time.Minute {
		t.Fatalf("make_egress_source: %+v %v", sv, err)
	}
}

func queueErr(p any) error  { _, err := newQueueConfig(p); return err }
func sourceErr(p any) error { _, err := newEgressSource(p); return err }
func pathErr(p any) error   { _, err := newEgressPath(p); return err }

func TestWarningsAndValidateConfig(t *testing.T) {
	src := `
kumo.on('smtp_server_rewrite_response', function() end)
kumo.on('validate_config', function()
  print('validating')
  error('pool "x" is not defined')
end)
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '/tmp/d', rocks_params = { x = 1 } }
  kumo.define_spool { name = 'meta', path = '/tmp/d' }
end)
`
	path := writePolicy(t, src, nil)
	quiet := slog.New(slog.NewTextHandler(discard{}, nil))
	p, err := Load(path, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	w := strings.Join(p.Warnings(), "\n")
	for _, want := range []string{`init.lua:2: kumo.on: mtakit does not fire the event "smtp_server_rewrite_response"`, "init.lua:8: kumo.define_spool: mtakit accepts and ignores rocks_params"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	// validate_config runs only in check mode.
	_, err = Load(path, Options{Logger: quiet, Check: true})
	if err == nil || !strings.Contains(err.Error(), "validate_config") || !strings.Contains(err.Error(), `init.lua:5: pool "x" is not defined`) {
		t.Errorf("check: %v", err)
	}
}

// The data and utility functions, checked from Lua.
func TestKumoFunctions(t *testing.T) {
	files := map[string]string{
		"data.toml": "name = \"x\"\nlist = [1, 2]\n[table]\nk = true\n",
		"data.json": `{"name": "y", "n": 1.5, "list": ["a"]}`,
	}
	src := `
local utils = require 'policy-extras.policy_utils'
local t = kumo.toml_load('data.toml')
assert(t.name == 'x' and t.list[2] == 2 and t.table.k == true, 'toml_load')
local j = kumo.json_load('data.json')
assert(j.name == 'y' and j.n == 1.5 and j.list[1] == 'a', 'json_load')
assert(kumo.serde.json_parse('{"a": [1]}').a[1] == 1, 'serde.json_parse')
assert(kumo.json_parse(kumo.json_encode({ a = 'b' })).a == 'b', 'json round trip')
assert(kumo.toml_parse(kumo.toml_encode({ a = 'b' })).a == 'b', 'toml round trip')
assert(utils.load_json_or_toml_file('data.toml').name == 'x', 'load_json_or_toml_file')
local dst = { a = 1 }
utils.merge_into({ b = 2 }, dst)
assert(dst.a == 1 and dst.b == 2, 'merge_into')
assert(#utils.table_keys({ x = 1, y = 2 }) == 2, 'table_keys')
assert(utils.table_contains({ 'p', 'q' }, 'q') and not utils.table_contains({ 'p' }, 'z'), 'table_contains')
assert(utils.starts_with('kumomta', 'kumo') and utils.ends_with('kumomta', 'mta'), 'starts_with/ends_with')
local calls = 0
local f = kumo.memoize(function(a) calls = calls + 1; return a * 2 end, { name = 'double', ttl = '1 minute', capacity = 10 })
assert(f(2) == 4 and f(2) == 4 and calls == 1, 'memoize')
local ok, err = pcall(kumo.json_parse, '{bad')
assert(not ok and tostring(err):find('JSON'), 'json_parse error')
`
	if _, err := Load(writePolicy(t, src, files), Options{}); err != nil {
		t.Fatal(err)
	}
}

// kumo.dkim signers take a key file or { key_data = ... }; a message
// received over HTTP runs http_message_generated.
func TestSignerKeySourcesAndHTTPEvent(t *testing.T) {
	dir := t.TempDir()
	kf, err := dkim.WriteKeyFiles(dkim.KeygenOptions{Dir: dir, Domain: "example.com", Selector: "ed", KeyOptions: dkim.KeyOptions{Type: dkim.KeyTypeEd25519}})
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _ := os.ReadFile(kf.KeyPath)
	src := fmt.Sprintf(`
local by_file = kumo.dkim.ed25519_signer { domain = 'example.com', selector = 'ed', headers = { 'From' }, key = %q }
local by_data = kumo.dkim.ed25519_signer { domain = 'example.com', selector = 'ed2', headers = { 'From', 'Subject' },
  key = { key_data = %q }, header_canonicalization = 'Simple', expiration = '1 day' }
kumo.on('http_message_generated', function(msg)
  msg:set_meta('event', 'http')
  msg:dkim_sign(by_file)
  msg:dkim_sign(by_data)
end)
kumo.on('smtp_server_message_received', function(msg) kumo.reject(550, '5.7.1 not this event') end)
`, kf.KeyPath, string(pemKey))
	p, err := Load(writePolicy(t, src, nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	delivered := make(chan []byte, 1)
	srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(),
		Logger: slog.New(slog.NewTextHandler(discard{}, nil)),
		Policy: mta.Policy{MessageReceived: p.MessageReceived, QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{Protocol: mta.Protocol{Deliver: func(_ context.Context, d *mta.Delivery) error { delivered <- d.Data; return nil }}}, nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.test"}, Protocol: "HTTP",
		Data: []byte("From: s@example.com\r\nSubject: hi\r\n\r\nbody\r\n")}); err != nil {
		t.Fatal(err)
	}
	data := string(<-delivered)
	if strings.Count(data, "DKIM-Signature:") != 2 || !strings.Contains(data, "s=ed;") || !strings.Contains(data, "s=ed2;") ||
		!strings.Contains(data, "a=ed25519-sha256") || !strings.Contains(data, "c=simple/relaxed") {
		t.Errorf("signatures:\n%s", data)
	}
}

// A policy stuck in a loop fails after Options.Timeout instead of hanging.
func TestLoopsAreBounded(t *testing.T) {
	for name, src := range map[string]string{
		"top level":  "while true do end\n",
		"init event": "kumo.on('init', function() while true do end end)\n",
	} {
		start := time.Now()
		_, err := Load(writePolicy(t, src, nil), Options{Timeout: 200 * time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "did not finish within 200ms") {
			t.Errorf("%s: %v", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
	p, err := Load(writePolicy(t, "kumo.on('get_queue_config', function() while true do end end)\n", nil), Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.QueueConfig("a.example", "", "", "a.example", ""); err == nil {
		t.Error("a looping get_queue_config returned no error")
	}
}

func TestSchedulingHeaderIsRefused(t *testing.T) {
	src := "kumo.on('smtp_server_message_received', function(msg) msg:import_scheduling_header('X-Schedule', true) end)\n"
	p, err := Load(writePolicy(t, src, nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := runPolicyOnMessage(t, p, "From: a@example.com\nSubject: now\n\nbody\n"); err != nil {
		t.Fatalf("without the header: %v", err)
	}
	_, err = runPolicyOnMessage(t, p, "From: a@example.com\nX-Schedule: {\"first_attempt\": \"2030-01-01T00:00:00Z\"}\n\nbody\n")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "X-Schedule") {
		t.Fatalf("with the header: %v, want 550 naming X-Schedule", err)
	}
}
