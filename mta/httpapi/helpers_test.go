package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// env is an mta.Server whose mail goes to a loopback sink, with the API
// served on 127.0.0.1.
type env struct {
	srv  *mta.Server
	api  *httpapi.API
	url  string
	sink *smtpsink.Sink
	log  *logs.Memory
	// readyQueue is the name of the ready queue mail to the sink uses.
	readyQueue string
}

type envOpts struct {
	hold    bool
	retry   time.Duration
	cfg     func(*httpapi.Config)
	options func(*mta.Options)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	sink, err := smtpsink.Start(smtpsink.Options{Store: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	dns := dnstest.Start(t)
	res, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{dns.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	list := []string{sink.Addr()}
	retry := o.retry
	if retry == 0 {
		retry = time.Hour
	}
	e := &env{sink: sink, log: &logs.Memory{}, readyQueue: egress.ReadyQueueName("unspecified", egress.MXListSiteName(list), "smtp_client")}
	opts := mta.Options{
		Hostname:     "mx.test",
		DataSpool:    spool.NewMemory(),
		MetaSpool:    spool.NewMemory(),
		Log:          e.log,
		Logger:       quiet(),
		HoldDelivery: o.hold,
		Resolver:     res,
		Shaper: shaping.PathFunc(func(context.Context, string, string, string) (shaping.PathConfig, error) {
			pc := shaping.Default()
			pc.ProhibitedHosts = []netip.Prefix{} // empty, not nil: allow loopback
			pc.IdleTimeout = 200 * time.Millisecond
			return pc, nil
		}),
		Policy: mta.Policy{
			QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
				return mta.QueueConfig{RetryInterval: retry, Protocol: mta.Protocol{MXList: list}}, nil
			},
		},
	}
	if o.options != nil {
		o.options(&opts)
	}
	e.srv, err = mta.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.Close() })
	cfg := httpapi.Config{Server: e.srv, Logger: quiet(), Hostname: "mx.test"}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	e.api, err = httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.api, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		e.api.Close()
	})
	e.url = "http://" + ln.Addr().String()
	return e
}

// call sends a request with a JSON body (a string is sent as is) and
// decodes a JSON answer into out when out is not nil.
func (e *env) call(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	return call(t, nil, method, e.url+path, body, out)
}

func call(t *testing.T, edit func(*http.Request), method, url string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && ct != "application/json" {
		t.Errorf("%s %s: %d with Content-Type %q, want JSON: %s", method, url, resp.StatusCode, ct, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
