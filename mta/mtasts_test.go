package mta_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
)

// The server applies the destination's MTA-STS policy: an enforce policy
// whose mx patterns exclude the domain's MX means no connection at all,
// and a transient failure that says why.
func TestMTASTSEnforcedByServer(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{}, nil)
	e.dns.SetTXT("_mta-sts.dest.test", "v=STSv1; id=1;")
	https := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "mta-sts.dest.test" || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n"))
	}))
	defer https.Close()
	client := &http.Client{Transport: &http.Transport{
		// The test server's certificate is not for mta-sts.dest.test;
		// certificate checks of the policy fetch are egress's tests' job.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, https.Listener.Addr().String())
		},
	}}
	sts, err := egress.NewMTASTS(egress.MTASTSOptions{Resolver: e.srvResolver(t), HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	ts := restartWith(t, e, e.shaper, func(o *mta.Options, _ *listener.Config) { o.MTASTS = sts })
	ts.srv.ReleaseDelivery()
	id := inject(t, ts.srv, "r@dest.test")[0]
	waitFor(t, "the policy's verdict", 10*time.Second, func() bool { return lastTransient(ts.sink, id) != "" })
	if got := lastTransient(ts.sink, id); !strings.Contains(strings.ToLower(got), "mta-sts") {
		t.Errorf("transient failure %q, want one naming MTA-STS", got)
	}
	if n := e.sink.Stats().Connections; n != 0 {
		t.Errorf("%d connections to an MX the enforce policy excludes", n)
	}
}
