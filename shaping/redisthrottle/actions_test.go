package redisthrottle

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mtakit/mtakit/shaping"
)

const busConfig = `
["example.com"]
mx_rollup = false

[["example.com".automation]]
regex = "slow down"
action = ["Suspend", {SetConfig={name="connection_limit", value=1}}]
duration = "1h"
`

func newNode(t *testing.T, addr string) (*shaping.Shaping, *ActionBus) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	bus := NewActionBus(c, "", nil)
	s, err := shaping.Load(context.Background(), shaping.Options{OnAction: bus.Publish},
		shaping.File{Name: "bus.toml", Data: []byte(busConfig)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		bus.Subscribe(ctx, func(a shaping.Action) {
			if err := s.ImportAction(a); err != nil {
				t.Error(err)
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done; bus.Close(); c.Close() })
	return s, bus
}

func waitSuspended(t *testing.T, s *shaping.Shaping, who string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _ := s.PathConfig(context.Background(), "ip-1", "mx.example.com", "example.com")
		if c.Suspended && c.ConnectionLimit == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: action did not arrive: suspended %v limit %d", who, c.Suspended, c.ConnectionLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An action triggered on one node is in force on the others, and on a
// node that joins later.
func TestActionBus(t *testing.T) {
	rs := startRedis(t)
	a, _ := newNode(t, rs.Addr())
	b, _ := newNode(t, rs.Addr())
	time.Sleep(100 * time.Millisecond) // let the subscriptions start
	acts := a.Observe(context.Background(), "ip-1", "mx.example.com", "example.com",
		shaping.Response{Code: 421, Text: "please slow down"})
	if len(acts) != 2 {
		t.Fatalf("actions %+v", acts)
	}
	waitSuspended(t, b, "subscribed node")
	c, _ := newNode(t, rs.Addr())
	waitSuspended(t, c, "late node")
	if n := len(a.ActiveActions()); n != 2 {
		t.Errorf("origin node has %d actions (echo?)", n)
	}
}
