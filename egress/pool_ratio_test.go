package egress_test

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
)

// TestWeightedPoolDelivery sends 1 000 messages through a 3:1 pool of two
// sources bound to 127.0.0.1 and 127.0.0.2 (Linux routes all of 127/8 to
// loopback) and counts, at the sink, the address each message came from.
func TestWeightedPoolDelivery(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	srcs, err := egress.ParseSources("sources.toml", []byte(`
[source."lo-1"]
source_address = "127.0.0.1"
ehlo_domain = "lo1.example"

[source."lo-2"]
source_address = "127.0.0.2"
ehlo_domain = "lo2.example"

[pool."warm"]
[pool."warm"."lo-1"]
weight = 3
[pool."warm"."lo-2"]
weight = 1
`))
	if err != nil {
		t.Fatal(err)
	}
	pool := srcs.Pools["warm"]
	const n = 1000
	// One connection per source, as a ready queue keeps; the source is
	// chosen per message from the queue's cursor.
	conns := map[string]*egress.Conn{}
	for i := range n {
		src := pool.NextFor("tenant@dest.example")
		c := conns[src.Name()]
		if c == nil {
			opts := sinkOptions(t, sink)
			opts.Source = src
			c = dial(t, opts)
			conns[src.Name()] = c
		}
		res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"r@dest.example"},
			Data: message(fmt.Sprint("w", i))})
		wantCode(t, "recipient", res.Recipients[0], 250, "2.0.0")
	}
	for _, c := range conns {
		c.Close()
	}
	byAddr := map[string]int{}
	for _, m := range sink.Messages() {
		ap, err := netip.ParseAddrPort(m.RemoteAddr)
		if err != nil {
			t.Fatalf("sink remote address %q", m.RemoteAddr)
		}
		byAddr[ap.Addr().String()]++
		if want := strings.Replace(ap.Addr().String(), "127.0.0.", "lo", 1) + ".example"; m.EHLO != want {
			t.Errorf("message from %s said EHLO %s, want %s", ap.Addr(), m.EHLO, want)
		}
	}
	t.Logf("deliveries by source address: %v", byAddr)
	if got := byAddr["127.0.0.1"] + byAddr["127.0.0.2"]; got != n {
		t.Fatalf("%d deliveries from the two sources, want %d (%v)", got, n, byAddr)
	}
	share := float64(byAddr["127.0.0.1"]) / n
	if math.Abs(share-0.75) > 0.02 {
		t.Errorf("127.0.0.1 sent %.1f%% of the mail, want 75%% ± 2%%", share*100)
	}
}
