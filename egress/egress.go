// Package egress holds the ways mail leaves mtakit: egress sources (a local
// address and EHLO name to send from, optionally through a proxy), weighted
// pools of sources, MX resolution and SMTP client delivery.
//
// The EgressSource and Pool interfaces are defined here; their
// implementations arrive with the queue and delivery issue.
//
// # MX resolution
//
// Resolver (resolver.go, mx.go) looks up MX, A and AAAA records with
// github.com/miekg/dns against configured recursive resolvers (default: the
// nameservers of /etc/resolv.conf). Decisions:
//
//   - Queries advertise an EDNS0 buffer of 1232 bytes and are repeated over
//     TCP when the UDP answer is truncated; a FORMERR to the EDNS0 query is
//     retried once without EDNS0. Servers are tried in order, Attempts
//     times over; SERVFAIL, REFUSED and other failure rcodes, timeouts and
//     network errors move on to the next server.
//   - Answers are cached per (name, type) in a bounded LRU: positive
//     answers for their lowest TTL clamped to [MinTTL, MaxTTL], NXDOMAIN and
//     NODATA for the SOA-derived TTL (RFC 2308) capped at NegativeTTL, and
//     temporary failures briefly (FailureTTL) so a broken domain is not
//     asked again for every message. Concurrent identical queries share one
//     exchange; each caller may give up on its own context, and the shared
//     exchange is cancelled only when all have.
//   - ResolveMX orders hosts as KumoMTA does: by preference, equal
//     preferences shuffled for each call (the site name uses the stable
//     order: preference, then name). No MX means the implicit MX, the
//     domain itself (RFC 5321 section 5.1). A null MX (RFC 7505; any MX
//     target ".", as KumoMTA) is ErrNullMX and NXDOMAIN is ErrNXDomain,
//     both permanent; everything else that fails is temporary, including
//     "no host has an address" (ErrNoAddresses), which KumoMTA also defers
//     (451 4.4.4) rather than bounces. Callers branch with errors.Is on the
//     sentinels, or with IsTemporary / IsPermanent.
//   - Address literals ("[10.0.0.1]", "[IPv6:::1]", and KumoMTA's untagged
//     "[::1]") and "domain:port" routing domains are accepted as in
//     KumoMTA's DomainClassification.
//   - SiteName reproduces KumoMTA's factor_names exactly, so ready queue
//     names (ReadyQueueName) and shaping mx_rollup keys match KumoMTA's;
//     MXListSiteName gives the "mx_list:h1,h2" site of an explicit mx_list.
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
