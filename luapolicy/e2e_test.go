package luapolicy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
)

// policyEnv is a policy directory copied from testdata with its
// placeholders filled, a DNS server and a sink.
type policyEnv struct {
	dir    string
	sink   *smtpsink.Sink
	dns    *dnstest.Server
	keys   *dkim.KeyFiles
	logDir string
}

func newPolicyEnv(t testing.TB, src string) *policyEnv {
	t.Helper()
	sink, err := smtpsink.Start(smtpsink.Options{Store: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	_, port, _ := strings.Cut(sink.Addr(), "127.0.0.1:")

	d := dnstest.Start(t)
	d.SetMX("dest.test", dnstest.MX{Pref: 10, Host: "mx.dest.test"})
	d.SetMX("www.dest.test", dnstest.MX{Pref: 10, Host: "mx.dest.test"})
	d.SetA("mx.dest.test", "127.0.0.1")

	dir := t.TempDir()
	e := &policyEnv{dir: dir, sink: sink, dns: d, logDir: filepath.Join(dir, "logs")}
	keyType := dkim.KeyTypeRSA
	if b, _ := os.ReadFile(filepath.Join(src, "dkim_data.toml")); strings.Contains(string(b), `algo = "ed25519"`) {
		keyType = dkim.KeyTypeEd25519
	}
	e.keys, err = dkim.WriteKeyFiles(dkim.KeygenOptions{Dir: filepath.Join(dir, "keys"), Domain: "example.com", Selector: "s1",
		KeyOptions: dkim.KeyOptions{Type: keyType}})
	if err != nil {
		t.Fatal(err)
	}
	repl := strings.NewReplacer("@DNS@", d.Addr(), "@SPOOL@", filepath.Join(dir, "spool"), "@LOGS@", e.logDir,
		"@SINKPORT@", port, "@DIR@", dir)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		b, err := os.ReadFile(filepath.Join(src, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ent.Name()), []byte(repl.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *policyEnv) load(t testing.TB) *luapolicy.Policy {
	t.Helper()
	p, err := luapolicy.Load(filepath.Join(e.dir, "init.lua"), luapolicy.Options{DKIMKeyDir: filepath.Join(e.dir, "keys"), Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// send runs one SMTP transaction and returns the error of each recipient
// (nil when accepted) and of DATA.
func send(t *testing.T, addr, from string, rcpts []string, msg string) ([]error, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	rcptErrs := make([]error, len(rcpts))
	ok := 0
	for i, r := range rcpts {
		rcptErrs[i] = c.Rcpt(r, nil)
		if rcptErrs[i] == nil {
			ok++
		}
	}
	if ok == 0 {
		return rcptErrs, nil
	}
	w, err := c.Data()
	if err != nil {
		return rcptErrs, err
	}
	if _, err := w.Write([]byte(strings.ReplaceAll(msg, "\n", "\r\n"))); err != nil {
		return rcptErrs, err
	}
	err = w.Close()
	c.Quit()
	return rcptErrs, err
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

const testMessage = `From: Sender <sender@example.com>
To: rcpt@dest.test
Subject: %s
Date: Tue, 1 Jul 2025 10:00:00 +0000
Message-ID: <%s@example.com>
X-Tenant: %s

Hello from a Lua policy.
`

// Mail sent over SMTP through a policy: testdata/e2e routes in Lua,
// testdata/helpers with the five policy-extras helpers and their files.
func TestEndToEndThroughPolicy(t *testing.T) {
	for _, dir := range []string{"testdata/e2e", "testdata/helpers"} {
		t.Run(filepath.Base(dir), func(t *testing.T) { testEndToEnd(t, dir) })
	}
}

func testEndToEnd(t *testing.T, policyDir string) {
	e := newPolicyEnv(t, policyDir)
	p := e.load(t)
	p.AddPoolName("pool-gold")
	p.AddPoolName("pool-default")
	srv, addrs, err := p.Start(mta.Options{Hostname: "mx.policy.test", Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	addr := addrs[0].String()

	// Relay decisions come from listener_domains.toml: dest.test and its
	// subdomains are relay_to; other.test is not.
	rcptErrs, err := send(t, addr, "sender@example.com",
		[]string{"a@dest.test", "b@other.test", "c@www.dest.test"},
		fmt.Sprintf(testMessage, "gold mail", "m1", "gold"))
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if rcptErrs[0] != nil || rcptErrs[2] != nil {
		t.Fatalf("relay_to recipients refused: %v", rcptErrs)
	}
	if code := smtpCode(rcptErrs[1]); code != 550 {
		t.Fatalf("other.test: got %v, want 550 relaying not permitted", rcptErrs[1])
	}
	if _, err := send(t, addr, "sender@example.com", []string{"d@dest.test"},
		fmt.Sprintf(testMessage, "plain mail", "m2", "other")); err != nil {
		t.Fatalf("DATA: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 3); err != nil {
		t.Fatalf("sink got %d messages: %v", e.sink.Count(), err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}

	// The egress source (and so the pool) follows the tenant header; the
	// header itself is gone.
	var signed [][]byte
	for _, m := range e.sink.Messages() {
		subject := headerOf(m.Data, "Subject")
		want := "plain.sender.test"
		if subject == "gold mail" {
			want = "gold.sender.test"
		}
		if m.EHLO != want {
			t.Errorf("%q arrived with EHLO %q, want %q (pool by tenant)", subject, m.EHLO, want)
		}
		if headerOf(m.Data, "X-Tenant") != "" {
			t.Errorf("%q still has its X-Tenant header", subject)
		}
		signed = append(signed, m.Data)
	}
	verifyDKIM(t, map[string]string{e.keys.RecordName: e.keys.RecordValue}, signed)

	recs, err := logs.ReadDir(e.logDir)
	if err != nil {
		t.Fatal(err)
	}
	pools := map[string]string{}
	for _, r := range recs {
		if r.Type == logs.Delivery {
			subject, _ := r.Headers["Subject"].(string)
			pools[subject] = deref(r.EgressPool) + "/" + deref(r.EgressSource)
			wantQueue := map[string]string{"gold mail": "gold@", "plain mail": "other@"}[subject]
			if !strings.HasPrefix(r.Queue, wantQueue) {
				t.Errorf("%q was queued in %q, want the tenant's queue %s...", subject, r.Queue, wantQueue)
			}
			if r.Meta["tenant"] == nil {
				t.Errorf("Delivery record without meta tenant: %+v", r)
			}
			if r.SourceAddress == nil || !strings.HasPrefix(r.SourceAddress.Address, "127.0.0.1:") {
				t.Errorf("Delivery record source_address %+v, want the sources' 127.0.0.1", r.SourceAddress)
			}
		}
	}
	if pools["gold mail"] != "pool-gold/gold" || pools["plain mail"] != "pool-default/plain" {
		t.Errorf("Delivery records: pool/source by subject %v", pools)
	}
}

// quietLogger keeps the servers and policies of the tests quiet.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))

func headerOf(data []byte, name string) string {
	for _, line := range strings.Split(string(data), "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// verifyDKIM checks every message's signatures with dkimpy.
func verifyDKIM(t *testing.T, zone map[string]string, msgs [][]byte) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-I", "-c", "import dkim").CombinedOutput(); err != nil {
		if os.Getenv("MTAKIT_REQUIRE_DKIMPY") == "1" {
			t.Fatalf("dkimpy: %v %s", err, out)
		}
		t.Logf("dkimpy not installed (Debian python3-dkim); DKIM not verified: %s", out)
		return
	}
	dir := t.TempDir()
	zb, _ := json.Marshal(zone)
	zp := filepath.Join(dir, "dns.json")
	os.WriteFile(zp, zb, 0o600)
	args := []string{"-I", filepath.Join("..", "dkim", "testdata", "dkimpy_verify.py"), zp}
	for i, m := range msgs {
		p := filepath.Join(dir, strconv.Itoa(i)+".eml")
		os.WriteFile(p, m, 0o600)
		args = append(args, p)
	}
	out, err := exec.Command("/usr/bin/python3", args...).Output()
	if err != nil {
		t.Fatalf("dkimpy_verify.py: %v", err)
	}
	var res []struct {
		File       string `json:"file"`
		Signatures []struct {
			D, S  string
			Pass  bool
			Error string
		} `json:"signatures"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if len(r.Signatures) != 1 || !r.Signatures[0].Pass || r.Signatures[0].D != "example.com" {
			t.Errorf("message %d: dkimpy: %+v\n%s", i, r.Signatures, msgs[i])
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
