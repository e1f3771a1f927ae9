package egress

import (
	"context"
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
