package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// DefaultSourceName is the name of the source used when no egress source
// is configured, as in KumoMTA.
const DefaultSourceName = "unspecified"

// SourceOptions configures a Source, mirroring the direct-connection keys
// of KumoMTA's kumo.make_egress_source.
type SourceOptions struct {
	// Name is the source name used in ready queue names and log records;
	// "" means DefaultSourceName.
	Name string
	// SourceAddress is the local IP address to connect from
	// (source_address); the zero Addr lets the kernel choose. A source
	// with an IPv4 address cannot reach IPv6 hosts and vice versa.
	SourceAddress netip.Addr
	// EHLODomain is the name to announce in EHLO (ehlo_domain); "" means
	// the host name. An egress path's ehlo_domain takes precedence.
	EHLODomain string
	// RemotePort, if not 0, overrides the egress path's smtp_port
	// (remote_port).
	RemotePort int
}

// Source is a direct egress source: it connects from an optional local
// address and announces an optional EHLO name. It implements
// EgressSource and is safe for concurrent use.
//
// KumoMTA's proxied sources (ha_proxy_server, socks5_proxy_server) are not
// implemented; an EgressSource whose Dial goes through a proxy can be
// supplied instead.
type Source struct {
	name       string
	addr       netip.Addr
	ehlo       string
	remotePort int
}

var _ EgressSource = (*Source)(nil)

// NewSource validates opts and returns the Source.
func NewSource(opts SourceOptions) (*Source, error) {
	name := opts.Name
	if name == "" {
		name = DefaultSourceName
	}
	if strings.ContainsAny(name, "\r\n") {
		return nil, fmt.Errorf("egress: source name %q contains a line break", name)
	}
	if opts.EHLODomain != "" {
		if err := checkEHLOName(opts.EHLODomain); err != nil {
			return nil, fmt.Errorf("egress: source %s: ehlo_domain: %w", name, err)
		}
	}
	if opts.RemotePort < 0 || opts.RemotePort > 65535 {
		return nil, fmt.Errorf("egress: source %s: remote_port %d out of range", name, opts.RemotePort)
	}
	return &Source{
		name:       name,
		addr:       opts.SourceAddress.Unmap(),
		ehlo:       opts.EHLODomain,
		remotePort: opts.RemotePort,
	}, nil
}

// DefaultSource returns the source KumoMTA uses when none is configured:
// named "unspecified", kernel-chosen source address, host name in EHLO.
func DefaultSource() *Source { return &Source{name: DefaultSourceName} }

// Name returns the source name.
func (s *Source) Name() string { return s.name }

// EHLODomain returns the configured EHLO name, or "".
func (s *Source) EHLODomain() string { return s.ehlo }

// SourceAddress returns the local address connections are made from; the
// zero Addr means the kernel chooses.
func (s *Source) SourceAddress() netip.Addr { return s.addr }

// RemotePort returns the port that overrides the egress path's smtp_port,
// or 0.
func (s *Source) RemotePort() int { return s.remotePort }

// Dial connects to addr ("ip:port") over network ("tcp", "tcp4" or
// "tcp6") from the source address. The context bounds the connection
// attempt. A failure to bind the source address because it is not
// configured on any interface (EADDRNOTAVAIL) is reported as such, so that
// the failure text says the source address is unplumbed, as KumoMTA's
// does.
func (s *Source) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if s.addr.IsValid() {
		if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Unmap().Is4() != s.addr.Is4() {
			return nil, fmt.Errorf("source %s: source_address %v and destination %s are of different address families",
				s.name, s.addr, addr)
		}
		d.LocalAddr = &net.TCPAddr{IP: s.addr.AsSlice(), Zone: s.addr.Zone()}
	}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		if s.addr.IsValid() && errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, &unplumbedError{source: s.name, addr: s.addr, dest: addr, err: err}
		}
		return nil, err
	}
	return conn, nil
}

// unplumbedError is a failure to bind a source address that no interface
// has.
type unplumbedError struct {
	source string
	addr   netip.Addr
	dest   string
	err    error
}

func (e *unplumbedError) Error() string {
	return fmt.Sprintf("bind %v for %s failed: %v while attempting to connect to %s", e.addr, e.source, e.err, e.dest)
}

func (e *unplumbedError) Unwrap() error { return e.err }

// remotePorter is implemented by sources with a remote_port override.
type remotePorter interface{ RemotePort() int }

// checkEHLOName rejects names that cannot be sent in an EHLO command.
func checkEHLOName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 255 {
		return errors.New("name longer than 255 bytes")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("name %q contains a space or control character", name)
		}
	}
	return nil
}
