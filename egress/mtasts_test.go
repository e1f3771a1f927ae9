package egress_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/shaping"
)

func TestParseMTASTSPolicy(t *testing.T) {
	cases := []struct {
		name, text string
		want       *egress.MTASTSPolicy
		wantErr    string
	}{
		{name: "rfc example", text: "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
			want: &egress.MTASTSPolicy{Mode: egress.MTASTSEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second}},
		{name: "crlf, spaces, tabs, unknown keys", text: "version: STSv1 \r\nmode:testing\r\nmx:\tMX.Example.COM.\r\nextension: x\r\nmax_age: 86400",
			want: &egress.MTASTSPolicy{Mode: egress.MTASTSTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}},
		{name: "none without mx", text: "version: STSv1\nmode: none\nmax_age: 60\n",
			want: &egress.MTASTSPolicy{Mode: egress.MTASTSNone, MaxAge: time.Minute}},
		{name: "max_age capped", text: "version: STSv1\nmode: none\nmax_age: 9999999999\n",
			want: &egress.MTASTSPolicy{Mode: egress.MTASTSNone, MaxAge: egress.MTASTSMaxAge}},
		{name: "no version", text: "mode: enforce\nmx: a.example\nmax_age: 1\n", wantErr: "missing version"},
		{name: "bad version", text: "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", wantErr: "unsupported version"},
		{name: "bad mode", text: "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", wantErr: "invalid mode"},
		{name: "two modes", text: "version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmax_age: 1\n", wantErr: "mode given more than once"},
		{name: "no mx", text: "version: STSv1\nmode: enforce\nmax_age: 1\n", wantErr: "missing mx"},
		{name: "no max_age", text: "version: STSv1\nmode: enforce\nmx: a.example\n", wantErr: "missing max_age"},
		{name: "negative max_age", text: "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", wantErr: "invalid max_age"},
		{name: "bad pattern", text: "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", wantErr: "mx"},
		{name: "not key value", text: "version: STSv1\ngarbage\n", wantErr: "not key: value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := egress.ParseMTASTSPolicy(tc.text)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want error %q", p, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode != tc.want.Mode || p.MaxAge != tc.want.MaxAge || strings.Join(p.MX, ",") != strings.Join(tc.want.MX, ",") {
				t.Errorf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestMTASTSPermits(t *testing.T) {
	p := &egress.MTASTSPolicy{Mode: egress.MTASTSEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com": true, "MAIL.example.com.": true, "mx.example.net": true,
		"example.net": false, "a.b.example.net": false, "xmail.example.com": false, "other.example.com": false,
	} {
		if got := p.Permits(host); got != want {
			t.Errorf("Permits(%q) = %v, want %v", host, got, want)
		}
	}
}

// stsEnv serves _mta-sts TXT records from an in-process DNS server and
// policies from a local HTTPS server whose certificate, from ca, covers
// mta-sts.example.test; every policy URL is routed to it.
type stsEnv struct {
	dns     *dnstest.Server
	ca      *testCA
	mu      sync.Mutex
	policy  string
	ctype   string
	status  int
	fetches atomic.Int32
	now     time.Time
	sts     *egress.MTASTS
}

func newSTSEnv(t *testing.T) *stsEnv {
	e := &stsEnv{ca: newTestCA(t), ctype: "text/plain; charset=utf-8", status: 200, now: time.Unix(1_800_000_000, 0)}
	e.dns = dnstest.Start(t, `_mta-sts.example.test. TXT "v=STSv1; id=20260101;"`)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.fetches.Add(1)
		e.mu.Lock()
		defer e.mu.Unlock()
		if r.Host != "mta-sts.example.test" || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		if e.status == http.StatusFound {
			http.Redirect(w, r, "https://mta-sts.example.test/elsewhere", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", e.ctype)
		w.WriteHeader(e.status)
		_, _ = w.Write([]byte(e.policy))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{e.ca.issue(false, "mta-sts.example.test")}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, Timeout: clientTimeout}
	sts, err := egress.NewMTASTS(egress.MTASTSOptions{
		Resolver:   newResolver(t, e.dns, func(o *egress.ResolverOptions) { o.CacheSize = -1 }),
		HTTPClient: client,
		Now:        func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.sts = sts
	return e
}

func (e *stsEnv) set(policy string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy = policy
}

func (e *stsEnv) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

func (e *stsEnv) get(t *testing.T) (*egress.MTASTSPolicy, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	return e.sts.Policy(ctx, "Example.Test.")
}

func TestMTASTSFetchAndCache(t *testing.T) {
	e := newSTSEnv(t)
	e.set("version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 3600\n")
	p, err := e.get(t)
	if err != nil || p == nil || p.Mode != egress.MTASTSEnforce || p.ID != "20260101" {
		t.Fatalf("Policy = %+v, %v", p, err)
	}
	// Cached: the same id does not fetch again, nor does a removed record.
	e.set("version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 3600\n")
	if p, _ := e.get(t); p.Mode != egress.MTASTSEnforce || e.fetches.Load() != 1 {
		t.Errorf("same id: mode %s after %d fetches", p.Mode, e.fetches.Load())
	}
	e.dns.SetTXT("_mta-sts.example.test")
	if p, _ := e.get(t); p == nil || p.Mode != egress.MTASTSEnforce || e.fetches.Load() != 1 {
		t.Errorf("record removed: %+v after %d fetches", p, e.fetches.Load())
	}
	// A new id fetches again.
	e.dns.SetTXT("_mta-sts.example.test", "v=STSv1; id=20260202")
	if p, _ := e.get(t); p.Mode != egress.MTASTSTesting || p.ID != "20260202" || e.fetches.Load() != 2 {
		t.Errorf("new id: %+v after %d fetches", p, e.fetches.Load())
	}
	// max_age expiry fetches again; a failed fetch with a valid cached
	// policy keeps the policy.
	e.set("version: STSv1\nmode: none\nmax_age: 60\n")
	e.advance(3601 * time.Second)
	if p, _ := e.get(t); p.Mode != egress.MTASTSNone || e.fetches.Load() != 3 {
		t.Errorf("expired: %+v after %d fetches", p, e.fetches.Load())
	}
	e.dns.SetTXT("_mta-sts.example.test", "v=STSv1; id=3")
	e.set("garbage")
	if p, err := e.get(t); err != nil || p == nil || p.Mode != egress.MTASTSNone {
		t.Errorf("failed refetch: %+v, %v; want the cached policy", p, err)
	}
}

func TestMTASTSFetchFailures(t *testing.T) {
	good := "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 3600\n"
	cases := []struct {
		name   string
		txt    []string
		status int
		ctype  string
		body   string
		want   string // "" = no policy and no error
	}{
		{name: "no record", txt: nil},
		{name: "not STSv1", txt: []string{"v=spf1 -all"}},
		{name: "two records", txt: []string{"v=STSv1; id=1", "v=STSv1; id=2"}},
		{name: "bad id", txt: []string{"v=STSv1; id=not-alnum!"}},
		{name: "404", txt: []string{"v=STSv1; id=1"}, status: 404, want: "404"},
		{name: "redirect not followed", txt: []string{"v=STSv1; id=1"}, status: http.StatusFound, want: "302"},
		{name: "wrong media type", txt: []string{"v=STSv1; id=1"}, ctype: "text/html", want: "Content-Type must be text/plain"},
		{name: "bad policy", txt: []string{"v=STSv1; id=1"}, body: "version: STSv1\n", want: "missing mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newSTSEnv(t)
			e.dns.SetTXT("_mta-sts.example.test", tc.txt...)
			e.set(good)
			if tc.body != "" {
				e.set(tc.body)
			}
			if tc.status != 0 {
				e.status = tc.status
			}
			if tc.ctype != "" {
				e.ctype = tc.ctype
			}
			p, err := e.get(t)
			if p != nil {
				t.Fatalf("got policy %+v", p)
			}
			if tc.want == "" {
				if err != nil || e.fetches.Load() != 0 {
					t.Errorf("err %v after %d fetches, want no policy and no fetch", err, e.fetches.Load())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
			// The failure is remembered: no second fetch at once.
			_, _ = e.get(t)
			if n := e.fetches.Load(); n != 1 {
				t.Errorf("%d fetches, want 1", n)
			}
		})
	}
}

// TestMTASTSDial shows each policy mode's effect on delivery.
func TestMTASTSDial(t *testing.T) {
	e := newSTSEnv(t)
	ca := newTestCA(t)
	verified := caSink(t, ca, nil)
	selfSigned := startSink(t, smtpsink.Options{TLS: true, Store: true})
	clear := startSink(t, smtpsink.Options{Store: true})
	cases := []struct {
		name     string
		policy   string
		sink     *smtpsink.Sink
		host     string
		mode     shaping.TLSMode
		disable  bool
		wantTLS  bool
		wantSTS  egress.MTASTSMode
		wantFail string
	}{
		{name: "enforce, permitted host, verified TLS", policy: "mode: enforce\nmx: mx.example.test", sink: verified,
			host: "mx.example.test", mode: shaping.Disabled, wantTLS: true, wantSTS: egress.MTASTSEnforce},
		{name: "enforce, wildcard", policy: "mode: enforce\nmx: *.example.test", sink: verified,
			host: "mx.example.test", mode: shaping.OpportunisticInsecure, wantTLS: true, wantSTS: egress.MTASTSEnforce},
		{name: "enforce rejects an MX outside its patterns", policy: "mode: enforce\nmx: allowed.example.net", sink: verified,
			host:     "mx.example.test",
			wantFail: `451 4.4.4 MTA-STS enforce policy for example.test permits none of its MX hosts "mx.example.test." allowed mx patterns: "allowed.example.net"`},
		{name: "enforce refuses clear text", policy: "mode: enforce\nmx: mx.example.test", sink: clear,
			host: "mx.example.test", wantFail: "tls policy is Required but STARTTLS is not advertised"},
		{name: "enforce refuses a self-signed certificate", policy: "mode: enforce\nmx: mx.example.test", sink: selfSigned,
			host: "mx.example.test", mode: shaping.RequiredInsecure, wantFail: "TLS handshake with mx.example.test"},
		{name: "testing is OpportunisticInsecure", policy: "mode: testing\nmx: other.example", sink: selfSigned,
			host: "mx.example.test", mode: shaping.Required, wantTLS: true, wantSTS: egress.MTASTSTesting},
		{name: "none keeps the path's mode", policy: "mode: none", sink: clear, host: "mx.example.test"},
		{name: "enable_mta_sts=false ignores the policy", policy: "mode: enforce\nmx: allowed.example.net", sink: clear,
			host: "mx.example.test", disable: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.dns.SetTXT("_mta-sts.example.test", "v=STSv1; id="+strings.Repeat("a", i+1))
			e.set("version: STSv1\nmax_age: 86400\n" + tc.policy + "\n")
			before := tc.sink.Stats().Connections
			opts := hostOptions(t, tc.sink, tc.host)
			opts.TLSConfig = &tls.Config{RootCAs: ca.Pool}
			opts.Config.EnableTLS = tc.mode
			opts.Config.EnableMTASTS = !tc.disable
			opts.Domain = "example.test"
			opts.MTASTS = e.sts
			if tc.wantFail != "" {
				ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
				defer cancel()
				_, err := egress.Dial(ctx, opts)
				resp, _ := egress.ResponseOf(err)
				if !strings.Contains(resp.String(), tc.wantFail) || !resp.Transient() {
					t.Errorf("got %q (%v), want %q", resp, err, tc.wantFail)
				}
				if strings.HasPrefix(tc.wantFail, "451") && (!errors.Is(err, egress.ErrMTASTSNoPermittedHost) || tc.sink.Stats().Connections != before) {
					t.Errorf("connected to a host the policy does not permit (%v)", err)
				}
				return
			}
			c, r := deliverOne(t, opts)
			wantCode(t, "delivery", r, 250, "2.0.0")
			info := c.Info()
			if (info.TLS != nil) != tc.wantTLS || info.MTASTS != tc.wantSTS {
				t.Errorf("TLS %+v MTASTS %q, want TLS=%v %q", info.TLS, info.MTASTS, tc.wantTLS, tc.wantSTS)
			}
		})
	}
}
