package egress

import (
	"context"
	"fmt"
	"net"
	"testing"
)

type namedSource string

func (n namedSource) Name() string       { return string(n) }
func (n namedSource) EHLODomain() string { return "" }
func (n namedSource) Dial(context.Context, string, string) (net.Conn, error) {
	return nil, nil
}

func TestWeightedPool(t *testing.T) {
	p := NewPool("pool-2",
		WeightedSource{Source: namedSource("ip-2"), Weight: 2},
		WeightedSource{Source: namedSource("ip-3"), Weight: 1},
	)
	var got string
	for range 6 {
		got += p.Next().Name() + " "
	}
	if want := "ip-2 ip-3 ip-2 ip-2 ip-3 ip-2 "; got != want {
		t.Errorf("picks %q, want %q", got, want)
	}
	if NewPool("empty").Next() != nil {
		t.Error("empty pool returned a source")
	}
	one := NewPool("pool-1", WeightedSource{Source: namedSource("ip-1")})
	if one.Next().Name() != "ip-1" || one.Next().Name() != "ip-1" {
		t.Error("single-source pool")
	}
}

func TestWeightedPoolPerKey(t *testing.T) {
	p := NewPool("p",
		WeightedSource{Source: namedSource("a"), Weight: 1},
		WeightedSource{Source: namedSource("b"), Weight: 1},
	)
	// Two queues whose messages alternate: with one shared cursor each
	// would always get the same source; with a cursor per queue each
	// spreads its own mail.
	count := map[string]map[string]int{"x": {}, "y": {}}
	for range 100 {
		for _, q := range []string{"x", "y"} {
			count[q][p.NextFor(q).Name()]++
		}
	}
	for q, c := range count {
		if c["a"] != 50 || c["b"] != 50 {
			t.Errorf("queue %s: %v, want 50/50", q, c)
		}
	}

	// Many queues of one message each are spread by weight too: a new
	// cursor starts where the pool's cursor is.
	w := NewPool("w",
		WeightedSource{Source: namedSource("heavy"), Weight: 3},
		WeightedSource{Source: namedSource("light"), Weight: 1},
	)
	first := map[string]int{}
	for i := range 400 {
		first[w.NextFor(fmt.Sprint("q", i)).Name()]++
	}
	if first["heavy"] != 300 || first["light"] != 100 {
		t.Errorf("first picks of 400 new keys: %v, want 300/100", first)
	}

	// Each cursor is exact over every window of sum(weights) picks.
	c := w.NewCursor()
	for win := range 5 {
		n := map[string]int{}
		for range 4 {
			n[c.Next().Name()]++
		}
		if n["heavy"] != 3 || n["light"] != 1 {
			t.Errorf("window %d: %v", win, n)
		}
	}
	if NewPool("empty").NextFor("q") != nil || NewPool("empty").NewCursor().Next() != nil {
		t.Error("empty pool returned a source")
	}
}
