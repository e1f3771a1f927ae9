package listener

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Disposition says what to do with a message addressed to a log_oob or
// log_arf listener domain. KumoMTA accepts a bool or one of these names;
// true means LogThenRelay.
type Disposition string

// Dispositions, named as KumoMTA names them.
const (
	// Ignore (also the zero value) means the listener domain does not
	// accept reports of this kind.
	Ignore Disposition = ""
	// LogThenDrop logs the report and discards the message.
	LogThenDrop Disposition = "LogThenDrop"
	// LogThenRelay logs the report and relays the message as usual.
	LogThenRelay Disposition = "LogThenRelay"
)

// Enabled reports whether reports of this kind are accepted.
func (d Disposition) Enabled() bool { return d == LogThenDrop || d == LogThenRelay }

// ParseDisposition parses "Ignore", "LogThenDrop", "LogThenRelay", or the
// boolean forms "true" (LogThenRelay) and "false" (Ignore).
func ParseDisposition(s string) (Disposition, error) {
	switch s {
	case "", "false", "Ignore":
		return Ignore, nil
	case "true", "LogThenRelay":
		return LogThenRelay, nil
	case "LogThenDrop":
		return LogThenDrop, nil
	}
	return Ignore, fmt.Errorf("listener: invalid disposition %q (want Ignore, LogThenDrop, LogThenRelay, true or false)", s)
}

// ListenerDomain is what a listener knows about a mail domain, as KumoMTA's
// make_listener_domain: whether mail for it may be relayed, which clients
// may relay mail from it, and whether it receives out-of-band bounces (OOB)
// or feedback-loop reports (ARF).
type ListenerDomain struct {
	// RelayTo accepts mail addressed to this domain from any client.
	RelayTo bool
	// RelayFrom lists the client networks allowed to relay mail to any
	// destination when the envelope sender is in this domain.
	RelayFrom []netip.Prefix
	// RelayFromAuthz lists the SMTP AUTH authorization identities (authz
	// ids) allowed to relay mail to any destination when the envelope
	// sender is in this domain (the relay_from_authz of KumoMTA's
	// listener_domains helper).
	RelayFromAuthz []string
	// LogOOB accepts RFC 3464 delivery status notifications addressed to
	// this domain and logs them as OOB records.
	LogOOB Disposition
	// LogARF accepts RFC 5965 feedback reports addressed to this domain and
	// logs them as Feedback records.
	LogARF Disposition
}

// RelayFromAllows reports whether peer is in RelayFrom.
func (d *ListenerDomain) RelayFromAllows(peer netip.Addr) bool {
	if d == nil {
		return false
	}
	return prefixesContain(d.RelayFrom, peer)
}

// RelayFromAuthzAllows reports whether authzID, the authorization identity
// of an authenticated session, is in RelayFromAuthz. An empty authzID (no
// AUTH) is never allowed.
func (d *ListenerDomain) RelayFromAuthzAllows(authzID string) bool {
	if d == nil || authzID == "" {
		return false
	}
	return slices.Contains(d.RelayFromAuthz, authzID)
}

// DomainLookup finds the listener domain for a mail domain. It is consulted
// for each recipient's domain (relay_to, log_oob, log_arf) and for the
// envelope sender's domain (relay_from). Implementations come from Go code
// (DomainMap), from listener_domains.toml or from a Lua policy's
// get_listener_domain.
type DomainLookup interface {
	// LookupListenerDomain returns the entry for domain as seen by the
	// listener bound to listenerAddr ("IP:PORT"), or nil when there is none.
	// domain is lower case. A Listener's ctx carries the session
	// (ContextSession), for lookups that depend on the connection meta.
	LookupListenerDomain(ctx context.Context, domain, listenerAddr string) (*ListenerDomain, error)
}

// DomainLookupFunc adapts a function to DomainLookup.
type DomainLookupFunc func(ctx context.Context, domain, listenerAddr string) (*ListenerDomain, error)

// LookupListenerDomain calls f.
func (f DomainLookupFunc) LookupListenerDomain(ctx context.Context, domain, listenerAddr string) (*ListenerDomain, error) {
	return f(ctx, domain, listenerAddr)
}

// DomainMap is a DomainLookup from a fixed table, matching as KumoMTA's
// listener_domains helper does: an exact name wins over a wildcard
// "*.example.com" (which does not match "example.com" itself), and "*"
// matches any domain without a more specific entry. Keys must be lower
// case; lookups are. The map applies to every listener.
type DomainMap map[string]*ListenerDomain

// LookupListenerDomain implements DomainLookup.
func (m DomainMap) LookupListenerDomain(_ context.Context, domain, _ string) (*ListenerDomain, error) {
	return m.lookup(strings.ToLower(domain)), nil
}

func (m DomainMap) lookup(domain string) *ListenerDomain {
	if d, ok := m.get(domain); ok {
		return d
	}
	// Try ever shorter wildcard suffixes: a.b.example.com matches
	// *.b.example.com before *.example.com.
	for rest := domain; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		if d, ok := m.get("*." + rest); ok {
			return d
		}
	}
	d, _ := m.get("*")
	return d
}

func (m DomainMap) get(key string) (*ListenerDomain, bool) {
	d, ok := m[key]
	return d, ok
}

func prefixesContain(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParsePrefixes parses CIDR blocks and bare addresses ("10.0.0.0/24",
// "127.0.0.1", "::1") as used by relay_hosts and relay_from.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("listener: invalid CIDR %q: %w", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("listener: invalid address %q: %w", s, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
