package egress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyInfo describes the proxy hop of a connection, for log records
// (KumoMTA's source_address.server and .protocol).
type ProxyInfo struct {
	// Protocol is ProxyHAProxy or ProxySOCKS5.
	Protocol string
	// Server is the proxy's address that was connected to.
	Server netip.AddrPort
}

// proxiedConn is a connection through a proxy. It keeps the *net.TCPConn
// (so that Conn.Usable can peek at the socket) and reports the proxy's
// sending address as LocalAddr.
type proxiedConn struct {
	*net.TCPConn
	local *net.TCPAddr
	info  ProxyInfo
}

func (c *proxiedConn) LocalAddr() net.Addr { return c.local }

// proxyInfoOf returns the proxy hop of a connection made by Source.Dial.
func proxyInfoOf(c net.Conn) *ProxyInfo {
	if pc, ok := c.(*proxiedConn); ok {
		info := pc.info
		return &info
	}
	return nil
}

// proxyError is a failure of the proxy hop (connecting to the proxy, or
// its handshake).
type proxyError struct {
	source string
	proto  string
	server string
	err    error
}

func (e *proxyError) Error() string {
	return fmt.Sprintf("source %s: %s proxy %s: %v", e.source, e.proto, e.server, e.err)
}

func (e *proxyError) Unwrap() error { return e.err }

// dialProxied connects to addr through the source's proxy.
func (s *Source) dialProxied(ctx context.Context, addr string) (net.Conn, error) {
	dest, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("source %s: proxied destination %q is not ip:port", s.name, addr)
	}
	dest = netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
	if dest.Addr().Is4() != s.proxySrc.Is4() {
		return nil, fmt.Errorf("skipping %s because %s_source_address %v address family does not match the destination address family %v",
			s.name, proxyKey(s.proxyProto), s.proxySrc, dest)
	}
	servers, err := s.proxyCandidates(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, server := range servers {
		c, err := s.dialProxyServer(ctx, server, dest)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, fmt.Errorf("source %s: failed to connect via any of %d proxy candidates: %w", s.name, len(errs), errors.Join(errs...))
}

func proxyKey(proto string) string {
	if proto == ProxyHAProxy {
		return "ha_proxy"
	}
	return "socks5_proxy"
}

// proxyCandidates resolves the proxy server into addresses, keeping those
// of the source address's family when one is set.
func (s *Source) proxyCandidates(ctx context.Context) ([]netip.AddrPort, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(s.proxyHost); err == nil {
		addrs = []netip.Addr{a}
	} else {
		lookup := s.opts.LookupNetIP
		if lookup == nil {
			lookup = net.DefaultResolver.LookupNetIP
		}
		addrs, err = lookup(ctx, "ip", s.proxyHost)
		if err != nil {
			return nil, fmt.Errorf("source %s: resolving %s_server %s: %w", s.name, proxyKey(s.proxyProto), s.proxyHost, err)
		}
	}
	var out []netip.AddrPort
	for _, a := range addrs {
		a = a.Unmap()
		if s.addr.IsValid() && a.Is4() != s.addr.Is4() {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, s.proxyPort))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("source %s: %s_server %s has no address of the family of source_address %v",
			s.name, proxyKey(s.proxyProto), s.proxyHost, s.addr)
	}
	return out, nil
}

// dialProxyServer connects to one proxy address and performs the
// handshake for dest.
func (s *Source) dialProxyServer(ctx context.Context, server, dest netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	if s.addr.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: s.addr.AsSlice()}
	}
	nc, err := d.DialContext(ctx, "tcp", server.String())
	if err != nil {
		if s.addr.IsValid() && errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, &unplumbedError{source: s.name, addr: s.addr, dest: server.String(), err: err}
		}
		return nil, &proxyError{source: s.name, proto: s.proxyProto, server: server.String(), err: err}
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("source %s: unexpected connection type %T", s.name, nc)
	}
	_ = tc.SetNoDelay(true)
	// The handshake is bounded by ctx: its deadline, and its cancellation
	// closing the connection.
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = tc.Close() })
	var local netip.AddrPort
	switch s.proxyProto {
	case ProxyHAProxy:
		err = writeProxyHeader(tc, s.proxySrc, dest)
		local = netip.AddrPortFrom(s.proxySrc, 0)
	default:
		local, err = s.socks5Handshake(tc, dest)
	}
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		tc.Close()
		var pbe *proxyBindError
		if errors.As(err, &pbe) {
			return nil, err
		}
		return nil, &proxyError{source: s.name, proto: s.proxyProto, server: server.String(),
			err: fmt.Errorf("handshake failed: %w", err)}
	}
	_ = tc.SetDeadline(time.Time{})
	return &proxiedConn{
		TCPConn: tc,
		local:   net.TCPAddrFromAddrPort(local),
		info:    ProxyInfo{Protocol: s.proxyProto, Server: server},
	}, nil
}

// writeProxyHeader sends a PROXY protocol v2 header (command PROXY, TCP
// over IPv4 or IPv6) naming src, port 0, as the source and dest as the
// destination, as KumoMTA does.
func writeProxyHeader(w io.Writer, src netip.Addr, dest netip.AddrPort) error {
	tp := proxyproto.TCPv4
	if dest.Addr().Is6() {
		tp = proxyproto.TCPv6
	}
	h := &proxyproto.Header{
		Version:           2,
		Command:           proxyproto.PROXY,
		TransportProtocol: tp,
		SourceAddr:        &net.TCPAddr{IP: src.AsSlice(), Port: 0},
		DestinationAddr:   net.TCPAddrFromAddrPort(dest),
	}
	_, err := h.WriteTo(w)
	return err
}

// SOCKS5 constants (RFC 1928, RFC 1929).
const (
	socks5Version     = 5
	socks5NoAuth      = 0
	socks5UserPass    = 2
	socks5NoMethod    = 0xff
	socks5CmdConnect  = 1
	socks5CmdBind     = 2
	socks5AtypIPv4    = 1
	socks5AtypDomain  = 3
	socks5AtypIPv6    = 4
	socks5AuthVersion = 1
)

// proxyBindError is a SOCKS5 proxy's refusal to bind the requested source
// address (KumoMTA's ProxyBindError).
type proxyBindError struct {
	source string
	addr   netip.Addr
	status byte
}

func (e *proxyBindError) Error() string {
	return fmt.Sprintf("source %s: the proxy server failed to bind %v: %s", e.source, e.addr, socks5StatusText(e.status))
}

// socks5Handshake runs KumoMTA's SOCKS5 dialogue on c: method negotiation
// (no authentication, or RFC 1929 username/password when configured),
// BIND of the proxy source address with port 0, then CONNECT to dest. It
// returns the address the proxy reports for its connection to dest.
func (s *Source) socks5Handshake(c net.Conn, dest netip.AddrPort) (netip.AddrPort, error) {
	methods := []byte{socks5NoAuth}
	if s.opts.SOCKS5ProxyUsername != "" {
		methods = append(methods, socks5UserPass)
	}
	if _, err := c.Write(append([]byte{socks5Version, byte(len(methods))}, methods...)); err != nil {
		return netip.AddrPort{}, err
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading method selection: %w", err)
	}
	if sel[0] != socks5Version {
		return netip.AddrPort{}, fmt.Errorf("not a SOCKS5 server (version %d)", sel[0])
	}
	switch sel[1] {
	case socks5NoAuth:
	case socks5UserPass:
		if s.opts.SOCKS5ProxyUsername == "" {
			return netip.AddrPort{}, errors.New("server chose username/password authentication, which was not offered")
		}
		u, p := s.opts.SOCKS5ProxyUsername, s.opts.SOCKS5ProxyPassword
		req := make([]byte, 0, 3+len(u)+len(p))
		req = append(req, socks5AuthVersion, byte(len(u)))
		req = append(req, u...)
		req = append(req, byte(len(p)))
		req = append(req, p...)
		if _, err := c.Write(req); err != nil {
			return netip.AddrPort{}, err
		}
		var resp [2]byte
		if _, err := io.ReadFull(c, resp[:]); err != nil {
			return netip.AddrPort{}, fmt.Errorf("reading authentication reply: %w", err)
		}
		if resp[0] != socks5AuthVersion {
			return netip.AddrPort{}, fmt.Errorf("invalid authentication reply version %d", resp[0])
		}
		if resp[1] != 0 {
			return netip.AddrPort{}, errors.New("SOCKS5 username/password was incorrect")
		}
	case socks5NoMethod:
		return netip.AddrPort{}, errors.New("server accepts none of the offered authentication methods")
	default:
		return netip.AddrPort{}, fmt.Errorf("server chose unsupported authentication method %d", sel[1])
	}

	if err := socks5Request(c, socks5CmdBind, netip.AddrPortFrom(s.proxySrc, 0)); err != nil {
		return netip.AddrPort{}, err
	}
	status, _, err := socks5Reply(c)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading BIND reply: %w", err)
	}
	if status != 0 {
		return netip.AddrPort{}, &proxyBindError{source: s.name, addr: s.proxySrc, status: status}
	}
	if err := socks5Request(c, socks5CmdConnect, dest); err != nil {
		return netip.AddrPort{}, err
	}
	status, bound, err := socks5Reply(c)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading CONNECT reply: %w", err)
	}
	if status != 0 {
		return netip.AddrPort{}, fmt.Errorf("failed to connect %v -> %v: %s", s.proxySrc, dest, socks5StatusText(status))
	}
	if !bound.IsValid() {
		bound = netip.AddrPortFrom(s.proxySrc, 0)
	}
	return bound, nil
}

// socks5Request writes a request for cmd with an IP address.
func socks5Request(w io.Writer, cmd byte, ap netip.AddrPort) error {
	req := []byte{socks5Version, cmd, 0}
	if ap.Addr().Is4() {
		req = append(req, socks5AtypIPv4)
	} else {
		req = append(req, socks5AtypIPv6)
	}
	req = append(req, ap.Addr().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, ap.Port())
	_, err := w.Write(req)
	return err
}

// socks5Reply reads a reply: its status and bound address (zero for a
// domain name).
func socks5Reply(r io.Reader) (byte, netip.AddrPort, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	if hdr[0] != socks5Version {
		return 0, netip.AddrPort{}, fmt.Errorf("invalid reply version %d", hdr[0])
	}
	var addr []byte
	switch hdr[3] {
	case socks5AtypIPv4:
		addr = make([]byte, 4)
	case socks5AtypIPv6:
		addr = make([]byte, 16)
	case socks5AtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return 0, netip.AddrPort{}, err
		}
		addr = make([]byte, n[0])
	default:
		return 0, netip.AddrPort{}, fmt.Errorf("invalid address type %d in reply", hdr[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(r, addr); err != nil {
		return 0, netip.AddrPort{}, err
	}
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	if hdr[3] != socks5AtypDomain {
		a, _ := netip.AddrFromSlice(addr)
		ap = netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(port[:]))
	}
	return hdr[1], ap, nil
}

func socks5StatusText(status byte) string {
	texts := []string{
		1: "general SOCKS server failure",
		2: "connection not allowed by ruleset",
		3: "network unreachable",
		4: "host unreachable",
		5: "connection refused",
		6: "TTL expired",
		7: "command not supported",
		8: "address type not supported",
	}
	if int(status) < len(texts) && texts[status] != "" {
		return texts[status]
	}
	return "status " + strconv.Itoa(int(status))
}
