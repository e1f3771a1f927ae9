package mta_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
)

// Mail leaves from the sources of its queue's pool in the pool's weight
// ratio, counted by source address at the sink; after SetEgressPools
// drops a source, new mail avoids it and nothing is lost.
func TestEgressPoolRatioAndReload(t *testing.T) {
	e := startE2E(t, time.Hour, time.Hour, smtpsink.Options{Store: true, KeyHeader: "Subject"}, nil)
	srcs, err := egress.ParseSources("sources.toml", []byte(`
[source."lo-1"]
source_address = "127.0.0.1"
[source."lo-2"]
source_address = "127.0.0.2"
[pool."warm"]
[pool."warm"."lo-1"]
weight = 3
[pool."warm"."lo-2"]
weight = 1
[pool."cold"]
[pool."cold"."lo-1"]
`))
	if err != nil {
		t.Fatal(err)
	}
	ts := restartWith(t, e, e.shaper, func(o *mta.Options, _ *listener.Config) {
		o.EgressPools = srcs.EgressPools()
		o.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: time.Hour, MaxAge: time.Hour, EgressPool: "warm"}, nil
		}
	})
	send := func(prefix string, n int) {
		for i := range n {
			_, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.test"},
				Data: fmt.Appendf(nil, "Subject: %s%d\r\n\r\nx\r\n", prefix, i)})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	bySource := func() map[string]int {
		out := map[string]int{}
		for _, m := range e.sink.Messages() {
			ap, err := netip.ParseAddrPort(m.RemoteAddr)
			if err != nil {
				t.Fatal(err)
			}
			out[ap.Addr().String()]++
		}
		return out
	}
	const n = 400
	send("a", n)
	ts.srv.ReleaseDelivery()
	waitFor(t, "first batch", 20*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	got := bySource()
	if got["127.0.0.1"] != 300 || got["127.0.0.2"] != 100 {
		t.Errorf("by source address %v, want 300 from 127.0.0.1 and 100 from 127.0.0.2 (weights 3:1)", got)
	}

	// lo-2 leaves the pool (a reload): only lo-1 sends new mail.
	warm := srcs.EgressPools()
	warm["warm"] = warm["cold"]
	ts.srv.SetEgressPools(warm)
	send("b", 40)
	waitFor(t, "second batch", 20*time.Second, func() bool { return ts.srv.QueuedCount() == 0 })
	after := bySource()
	if after["127.0.0.2"] != 100 || after["127.0.0.1"] != 340 {
		t.Errorf("after the reload %v, want the 40 new messages all from 127.0.0.1", after)
	}
}
