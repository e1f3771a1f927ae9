package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultSourceName is the name of the source used when no egress source
// is configured, as in KumoMTA.
const DefaultSourceName = "unspecified"

// SourceOptions configures a Source, with the keys of KumoMTA's
// kumo.make_egress_source.
type SourceOptions struct {
	// Name is the source name used in ready queue names and log records;
	// "" means DefaultSourceName.
	Name string
	// SourceAddress is the local IP address to connect from
	// (source_address); the zero Addr lets the kernel choose. A source
	// with an IPv4 address cannot reach IPv6 hosts and vice versa. With a
	// proxy it is the address the connection to the proxy is made from.
	SourceAddress netip.Addr
	// EHLODomain is the name to announce in EHLO (ehlo_domain); "" means
	// the host name. An egress path's ehlo_domain takes precedence.
	EHLODomain string
	// RemotePort, if not 0, overrides the egress path's smtp_port
	// (remote_port).
	RemotePort int
	// TTL is how long KumoMTA caches the source definition (ttl, default
	// 60 seconds). mtakit keeps it for callers that reload sources
	// periodically; a Source itself never expires.
	TTL time.Duration

	// HAProxyServer is the "host:port" of an HAProxy-style proxy
	// (ha_proxy_server); the host is an IP address or a DNS name resolved
	// at connection time, each address tried in turn. It needs
	// HAProxySourceAddress: the connection is made to the proxy, which
	// receives a PROXY protocol v2 header naming HAProxySourceAddress
	// (port 0) as the source and the mail host as the destination, and
	// makes the onward connection from that address.
	HAProxyServer string
	// HAProxySourceAddress is the address the proxy should send from
	// (ha_proxy_source_address).
	HAProxySourceAddress netip.Addr

	// SOCKS5ProxyServer is the "host:port" of a SOCKS5 proxy
	// (socks5_proxy_server), resolved like HAProxyServer. It needs
	// SOCKS5ProxySourceAddress. The dialogue is KumoMTA's (what its
	// kumo-proxy serves): a BIND request for SOCKS5ProxySourceAddress
	// port 0, then a CONNECT to the mail host on the same connection.
	SOCKS5ProxyServer string
	// SOCKS5ProxySourceAddress is the address the proxy should send from
	// (socks5_proxy_source_address).
	SOCKS5ProxySourceAddress netip.Addr
	// SOCKS5ProxyUsername and SOCKS5ProxyPassword, when both are set,
	// are offered to the proxy with RFC 1929 username/password
	// authentication (socks5_proxy_username, socks5_proxy_password).
	SOCKS5ProxyUsername string
	SOCKS5ProxyPassword string

	// SuspendWhenUnplumbed and SuspendWhenProxyUnhealthy are KumoMTA's
	// automatic source suspension rules. They are kept so that
	// configurations load, but mtakit does not suspend sources yet.
	SuspendWhenUnplumbed      *SuspendOnFailure
	SuspendWhenProxyUnhealthy *SuspendOnFailure

	// LookupNetIP resolves proxy host names; nil means
	// net.DefaultResolver.LookupNetIP.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DefaultSourceTTL is KumoMTA's default ttl of a source definition.
const DefaultSourceTTL = 60 * time.Second

// Proxy protocols, as KumoMTA names them in source_address.protocol of
// log records.
const (
	ProxyHAProxy = "haproxy"
	ProxySOCKS5  = "socks5"
)

// Source is an egress source: it connects from an optional local address
// and announces an optional EHLO name, directly or through an HAProxy
// (PROXY protocol v2) or SOCKS5 proxy. It implements EgressSource and is
// safe for concurrent use.
type Source struct {
	name       string
	addr       netip.Addr
	ehlo       string
	remotePort int
	opts       SourceOptions
	proxyProto string // "", ProxyHAProxy or ProxySOCKS5
	proxyHost  string
	proxyPort  uint16
	proxySrc   netip.Addr
}

var _ EgressSource = (*Source)(nil)

// NewSource validates opts and returns the Source.
//
// A proxy server without its source address (or the reverse), or both an
// HAProxy and a SOCKS5 proxy, is an error. KumoMTA silently connects
// directly in the first case and uses the HAProxy in the second; mtakit
// refuses both, since mail would leave from an address nobody chose.
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
	if opts.TTL < 0 {
		return nil, fmt.Errorf("egress: source %s: negative ttl", name)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultSourceTTL
	}
	opts.Name = name
	opts.SourceAddress = opts.SourceAddress.Unmap()
	opts.HAProxySourceAddress = opts.HAProxySourceAddress.Unmap()
	opts.SOCKS5ProxySourceAddress = opts.SOCKS5ProxySourceAddress.Unmap()
	s := &Source{
		name:       name,
		addr:       opts.SourceAddress,
		ehlo:       opts.EHLODomain,
		remotePort: opts.RemotePort,
		opts:       opts,
	}
	ha := opts.HAProxyServer != "" || opts.HAProxySourceAddress.IsValid()
	socks := opts.SOCKS5ProxyServer != "" || opts.SOCKS5ProxySourceAddress.IsValid()
	switch {
	case ha && socks:
		return nil, fmt.Errorf("egress: source %s: both ha_proxy_server and socks5_proxy_server are set", name)
	case ha:
		if err := s.setProxy(ProxyHAProxy, "ha_proxy", opts.HAProxyServer, opts.HAProxySourceAddress); err != nil {
			return nil, err
		}
	case socks:
		if err := s.setProxy(ProxySOCKS5, "socks5_proxy", opts.SOCKS5ProxyServer, opts.SOCKS5ProxySourceAddress); err != nil {
			return nil, err
		}
		if len(opts.SOCKS5ProxyUsername) > 255 || len(opts.SOCKS5ProxyPassword) > 255 {
			return nil, fmt.Errorf("egress: source %s: socks5 proxy username and password must be shorter than 256 bytes", name)
		}
		if (opts.SOCKS5ProxyUsername == "") != (opts.SOCKS5ProxyPassword == "") {
			return nil, fmt.Errorf("egress: source %s: socks5_proxy_username and socks5_proxy_password go together", name)
		}
	default:
		if opts.SOCKS5ProxyUsername != "" || opts.SOCKS5ProxyPassword != "" {
			return nil, fmt.Errorf("egress: source %s: socks5 proxy credentials without socks5_proxy_server", name)
		}
	}
	return s, nil
}

func (s *Source) setProxy(proto, key, server string, src netip.Addr) error {
	if server == "" {
		return fmt.Errorf("egress: source %s: %s_source_address is set without %s_server", s.name, key, key)
	}
	if !src.IsValid() {
		return fmt.Errorf("egress: source %s: %s_server is set without %s_source_address", s.name, key, key)
	}
	host, port, err := ParseProxyServer(server)
	if err != nil {
		return fmt.Errorf("egress: source %s: %s_server: %w", s.name, key, err)
	}
	s.proxyProto, s.proxyHost, s.proxyPort, s.proxySrc = proto, host, port, src
	return nil
}

// ParseProxyServer checks a proxy server address, "host:port" where host
// is an IP address (IPv6 in brackets) or a DNS name, and returns its parts.
func ParseProxyServer(server string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(server)
	if err != nil {
		return "", 0, fmt.Errorf("invalid address %q: want host:port", server)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("invalid port in %q", server)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", 0, fmt.Errorf("invalid address %q: zones are not supported", server)
		}
		return a.Unmap().String(), uint16(n), nil
	}
	if !validHostname(h) {
		return "", 0, fmt.Errorf("invalid hostname %q in %q", h, server)
	}
	return strings.TrimSuffix(h, "."), uint16(n), nil
}

// validHostname checks DNS name syntax: dot-separated labels of letters,
// digits and inner hyphens (underscores tolerated), at most 253 bytes.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// DefaultSource returns the source KumoMTA uses when none is configured:
// named "unspecified", kernel-chosen source address, host name in EHLO.
func DefaultSource() *Source {
	return &Source{name: DefaultSourceName, opts: SourceOptions{Name: DefaultSourceName, TTL: DefaultSourceTTL}}
}

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

// Options returns the options the source was made from, with defaults
// applied (Name, TTL).
func (s *Source) Options() SourceOptions { return s.opts }

// Proxy returns the proxy protocol (ProxyHAProxy, ProxySOCKS5, or "" for a
// direct source), the proxy server ("host:port") and the address the
// proxy is asked to send from.
func (s *Source) Proxy() (protocol, server string, source netip.Addr) {
	if s.proxyProto == "" {
		return "", "", netip.Addr{}
	}
	return s.proxyProto, net.JoinHostPort(s.proxyHost, strconv.Itoa(int(s.proxyPort))), s.proxySrc
}

// Dial connects to addr ("ip:port") over network ("tcp", "tcp4" or
// "tcp6") from the source: directly from the source address, or through
// the source's proxy. The context bounds the connection attempt,
// including the proxy handshake. A failure to bind the source address
// because it is not configured on any interface (EADDRNOTAVAIL) is
// reported as such, so that the failure text says the source address is
// unplumbed, as KumoMTA's does.
//
// A proxied connection's LocalAddr is the address the proxy sends from:
// the PROXY header's source (port 0) for HAProxy, the address the SOCKS5
// proxy reports for its onward connection otherwise. ConnInfo.Proxy
// names the proxy.
func (s *Source) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.proxyProto != "" {
		return s.dialProxied(ctx, addr)
	}
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
