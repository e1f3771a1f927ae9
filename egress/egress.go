// Package egress holds the ways mail leaves mtakit: egress sources (a local
// address and EHLO name to send from, optionally through a proxy), weighted
// pools of sources, MX resolution and SMTP client delivery.
//
// This package currently defines the interfaces; the implementations arrive
// with the queue and delivery issue.
package egress

import (
	"context"
	"net"
)

// EgressSource is a named way out: the address to bind, the EHLO name to
// present, and how to reach the destination (directly or via a proxy hop).
//
// Implementations must be safe for concurrent use.
type EgressSource interface {
	// Name is the source name used in ready queue names and log records.
	Name() string
	// EHLODomain is the name announced in EHLO; "" means the server's
	// hostname.
	EHLODomain() string
	// Dial connects to addr ("host:port") from this source.
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// Pool is a weighted set of egress sources (KumoMTA's egress pool).
type Pool interface {
	// Name is the pool name used in log records.
	Name() string
	// Next returns the source to use for the next ready queue assignment,
	// round-robin by weight.
	Next() EgressSource
}
