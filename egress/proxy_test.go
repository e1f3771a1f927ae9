package egress_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
)

// testProxy is a TCP proxy on 127.0.0.1 for the tests: handshake reads the
// client's proxy handshake and returns the address to connect to and the
// local address to connect from; the proxy then relays bytes.
type testProxy struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	// peers are the addresses clients connected from.
	peers []netip.AddrPort
}

func startProxy(t *testing.T, handshake func(c net.Conn) (net.Conn, error)) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.peers = append(p.peers, c.RemoteAddr().(*net.TCPAddr).AddrPort())
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(clientTimeout))
				up, err := handshake(c)
				if err != nil {
					p.mu.Lock()
					p.errs = append(p.errs, err)
					p.mu.Unlock()
					return
				}
				defer up.Close()
				_ = c.SetDeadline(time.Time{})
				done := make(chan struct{}, 2)
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *testProxy) addr() string { return p.ln.Addr().String() }

func (p *testProxy) clients() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netip.AddrPort(nil), p.peers...)
}

func (p *testProxy) errors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.errs...)
}

// prefixConn replays bytes already read before the rest of the
// connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// readProxyV2 parses a PROXY protocol v2 header of a TCP connection by
// hand (independently of the library the client uses).
func readProxyV2(r io.Reader) (src, dst netip.AddrPort, err error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return src, dst, err
	}
	sig := []byte("\r\n\r\n\x00\r\nQUIT\n")
	if !bytes.Equal(hdr[:12], sig) {
		return src, dst, fmt.Errorf("bad signature % x", hdr[:12])
	}
	if hdr[12] != 0x21 {
		return src, dst, fmt.Errorf("version/command byte %#x, want 0x21 (v2 PROXY)", hdr[12])
	}
	n := binary.BigEndian.Uint16(hdr[14:16])
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return src, dst, err
	}
	var alen int
	switch hdr[13] {
	case 0x11: // TCP over IPv4
		alen = 4
	case 0x21: // TCP over IPv6
		alen = 16
	default:
		return src, dst, fmt.Errorf("family/protocol byte %#x", hdr[13])
	}
	if int(n) < 2*alen+4 {
		return src, dst, fmt.Errorf("address block of %d bytes", n)
	}
	sa, _ := netip.AddrFromSlice(body[:alen])
	da, _ := netip.AddrFromSlice(body[alen : 2*alen])
	sp := binary.BigEndian.Uint16(body[2*alen:])
	dp := binary.BigEndian.Uint16(body[2*alen+2:])
	return netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp), nil
}

// dialFrom connects to dst from local (port 0 means any).
func dialFrom(local netip.AddrPort, dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: clientTimeout, LocalAddr: net.TCPAddrFromAddrPort(local)}
	return d.Dial("tcp", dst.String())
}

func TestHAProxyHop(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	sinkAP := netip.MustParseAddrPort(sink.Addr())
	type seen struct{ src, dst netip.AddrPort }
	headers := make(chan seen, 10)
	proxy := startProxy(t, func(c net.Conn) (net.Conn, error) {
		src, dst, err := readProxyV2(c)
		if err != nil {
			return nil, err
		}
		headers <- seen{src, dst}
		// Make the onward connection from the address the header names,
		// as HAProxy with "source" set from the PROXY header would.
		return dialFrom(src, dst)
	})

	src, err := egress.NewSource(egress.SourceOptions{
		Name:                 "via-haproxy",
		SourceAddress:        netip.MustParseAddr("127.0.0.3"), // to the proxy
		HAProxyServer:        proxy.addr(),
		HAProxySourceAddress: netip.MustParseAddr("127.0.0.2"), // from the proxy
		EHLODomain:           "ha.example",
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := sinkOptions(t, sink)
	opts.Source = src
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("ha")})
	wantCode(t, "recipient", res.Recipients[0], 250, "2.0.0")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	h := <-headers
	if h.src != netip.MustParseAddrPort("127.0.0.2:0") || h.dst != sinkAP {
		t.Errorf("PROXY header src %v dst %v, want 127.0.0.2:0 and %v", h.src, h.dst, sinkAP)
	}
	if errs := proxy.errors(); len(errs) > 0 {
		t.Fatalf("proxy: %v", errs)
	}
	if p := proxy.clients(); len(p) != 1 || p[0].Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Errorf("proxy saw clients %v, want 127.0.0.3 (source_address)", p)
	}
	m := sink.Messages()
	if len(m) != 1 || !strings.HasPrefix(m[0].RemoteAddr, "127.0.0.2:") || m[0].EHLO != "ha.example" {
		t.Errorf("sink saw %+v", m)
	}
	info := c.Info()
	if info.Proxy == nil || info.Proxy.Protocol != "haproxy" || info.Proxy.Server.String() != proxy.addr() ||
		info.LocalAddr != netip.MustParseAddrPort("127.0.0.2:0") || info.Addr != sinkAP {
		t.Errorf("info %+v proxy %+v", info, info.Proxy)
	}

	// The proxy source address must be of the destination's family.
	v6, err := egress.NewSource(egress.SourceOptions{Name: "v6", HAProxyServer: proxy.addr(), HAProxySourceAddress: netip.MustParseAddr("::1")})
	if err != nil {
		t.Fatal(err)
	}
	opts.Source = v6
	if resp, _ := dialErr(t, opts); !strings.Contains(resp.Text, "address family does not match") {
		t.Errorf("family mismatch: %q", resp)
	}

	// A proxy that is not there fails the host transiently.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	gone, _ := egress.NewSource(egress.SourceOptions{Name: "gone", HAProxyServer: dead, HAProxySourceAddress: netip.MustParseAddr("127.0.0.2")})
	opts.Source = gone
	if resp, _ := dialErr(t, opts); resp.Code != 400 || !strings.Contains(resp.Text, "haproxy proxy "+dead) {
		t.Errorf("dead proxy: %q", resp)
	}
}

// socks5Server is a minimal SOCKS5 server speaking KumoMTA's dialogue
// (as kumo-proxy does): method negotiation, optional RFC 1929
// authentication, BIND of the source address, CONNECT.
func socks5Server(user, pass string) func(c net.Conn) (net.Conn, error) {
	return func(c net.Conn) (net.Conn, error) {
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		methods := make([]byte, hdr[1])
		if _, err := io.ReadFull(c, methods); err != nil {
			return nil, err
		}
		if hdr[0] != 5 {
			return nil, fmt.Errorf("version %d", hdr[0])
		}
		want := byte(0)
		if user != "" {
			want = 2
		}
		if !bytes.Contains(methods, []byte{want}) {
			c.Write([]byte{5, 0xff})
			return nil, fmt.Errorf("client offered methods %v", methods)
		}
		c.Write([]byte{5, want})
		if want == 2 {
			var b [2]byte
			io.ReadFull(c, b[:])
			u := make([]byte, b[1])
			io.ReadFull(c, u)
			io.ReadFull(c, b[:1])
			p := make([]byte, b[0])
			io.ReadFull(c, p)
			if string(u) != user || string(p) != pass {
				c.Write([]byte{1, 1})
				return nil, errors.New("bad credentials")
			}
			c.Write([]byte{1, 0})
		}
		reply := func(status byte, ap netip.AddrPort) {
			r := []byte{5, status, 0, 1}
			a := ap.Addr()
			if !a.IsValid() {
				a = netip.IPv4Unspecified()
			}
			if a.Is6() {
				r[3] = 4
			}
			r = append(r, a.AsSlice()...)
			r = binary.BigEndian.AppendUint16(r, ap.Port())
			c.Write(r)
		}
		readReq := func() (byte, netip.AddrPort, error) {
			var h [4]byte
			if _, err := io.ReadFull(c, h[:]); err != nil {
				return 0, netip.AddrPort{}, err
			}
			n := 4
			if h[3] == 4 {
				n = 16
			} else if h[3] != 1 {
				return 0, netip.AddrPort{}, fmt.Errorf("address type %d", h[3])
			}
			b := make([]byte, n+2)
			if _, err := io.ReadFull(c, b); err != nil {
				return 0, netip.AddrPort{}, err
			}
			a, _ := netip.AddrFromSlice(b[:n])
			return h[1], netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[n:])), nil
		}
		cmd, bind, err := readReq()
		if err != nil || cmd != 2 {
			return nil, fmt.Errorf("first request: cmd %d, %v (want BIND)", cmd, err)
		}
		// Check that the address can be bound, as kumo-proxy does.
		probe, err := net.Listen("tcp", net.JoinHostPort(bind.Addr().String(), "0"))
		if err != nil {
			reply(1, netip.AddrPort{})
			return nil, fmt.Errorf("bind %v: %w", bind, err)
		}
		probe.Close()
		reply(0, netip.AddrPortFrom(bind.Addr(), 0))
		cmd, dst, err := readReq()
		if err != nil || cmd != 1 {
			return nil, fmt.Errorf("second request: cmd %d, %v (want CONNECT)", cmd, err)
		}
		up, err := dialFrom(netip.AddrPortFrom(bind.Addr(), 0), dst)
		if err != nil {
			reply(5, netip.AddrPort{})
			return nil, err
		}
		reply(0, up.LocalAddr().(*net.TCPAddr).AddrPort())
		return up, nil
	}
}

func TestSOCKS5Hop(t *testing.T) {
	sink := startSink(t, smtpsink.Options{Store: true})
	sinkAP := netip.MustParseAddrPort(sink.Addr())
	proxy := startProxy(t, socks5Server("", ""))
	src, err := egress.NewSource(egress.SourceOptions{
		Name:                     "via-socks",
		SOCKS5ProxyServer:        proxy.addr(),
		SOCKS5ProxySourceAddress: netip.MustParseAddr("127.0.0.2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := sinkOptions(t, sink)
	opts.Source = src
	c := dial(t, opts)
	for i := range 3 { // the connection carries several transactions
		res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message(fmt.Sprint("socks", i))})
		wantCode(t, "recipient", res.Recipients[0], 250, "2.0.0")
	}
	if !c.Usable() {
		t.Error("proxied connection not usable after sending")
	}
	info := c.Info()
	c.Close()
	if errs := proxy.errors(); len(errs) > 0 {
		t.Fatalf("proxy: %v", errs)
	}
	m := sink.Messages()
	if len(m) != 3 || !strings.HasPrefix(m[0].RemoteAddr, "127.0.0.2:") {
		t.Errorf("sink saw %+v", m)
	}
	if info.Proxy == nil || info.Proxy.Protocol != "socks5" || info.Proxy.Server.String() != proxy.addr() ||
		info.LocalAddr.String() != m[0].RemoteAddr || info.Addr != sinkAP {
		t.Errorf("info %+v proxy %+v (sink saw %s)", info, info.Proxy, m[0].RemoteAddr)
	}

	// Username and password authentication.
	authProxy := startProxy(t, socks5Server("user", "pw"))
	good, _ := egress.NewSource(egress.SourceOptions{Name: "auth", SOCKS5ProxyServer: authProxy.addr(),
		SOCKS5ProxySourceAddress: netip.MustParseAddr("127.0.0.4"), SOCKS5ProxyUsername: "user", SOCKS5ProxyPassword: "pw"})
	opts.Source = good
	c = dial(t, opts)
	send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("auth")})
	c.Close()
	if m := sink.Messages(); len(m) != 4 || !strings.HasPrefix(m[3].RemoteAddr, "127.0.0.4:") {
		t.Errorf("sink saw %+v", m)
	}
	bad, _ := egress.NewSource(egress.SourceOptions{Name: "auth", SOCKS5ProxyServer: authProxy.addr(),
		SOCKS5ProxySourceAddress: netip.MustParseAddr("127.0.0.4"), SOCKS5ProxyUsername: "user", SOCKS5ProxyPassword: "nope"})
	opts.Source = bad
	if resp, _ := dialErr(t, opts); !strings.Contains(resp.Text, "username/password was incorrect") {
		t.Errorf("bad password: %q", resp)
	}

	// A source address the proxy cannot bind.
	unbound, _ := egress.NewSource(egress.SourceOptions{Name: "unbound", SOCKS5ProxyServer: proxy.addr(),
		SOCKS5ProxySourceAddress: netip.MustParseAddr("192.0.2.7")})
	opts.Source = unbound
	if resp, _ := dialErr(t, opts); !strings.Contains(resp.Text, "the proxy server failed to bind 192.0.2.7") {
		t.Errorf("bind failure: %q", resp)
	}
}

func TestProxySourceValidation(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	for _, tc := range []struct {
		name string
		opts egress.SourceOptions
		want string
	}{
		{"ha without source", egress.SourceOptions{HAProxyServer: "10.0.0.1:5000"}, "without ha_proxy_source_address"},
		{"ha without server", egress.SourceOptions{HAProxySourceAddress: a}, "without ha_proxy_server"},
		{"socks without source", egress.SourceOptions{SOCKS5ProxyServer: "10.0.0.1:5000"}, "without socks5_proxy_source_address"},
		{"both", egress.SourceOptions{HAProxyServer: "10.0.0.1:1", HAProxySourceAddress: a, SOCKS5ProxyServer: "10.0.0.1:2", SOCKS5ProxySourceAddress: a}, "both"},
		{"bad host", egress.SourceOptions{SOCKS5ProxyServer: "not a valid hostname:5000", SOCKS5ProxySourceAddress: a}, "invalid hostname"},
		{"bad port", egress.SourceOptions{SOCKS5ProxyServer: "proxy.example:0", SOCKS5ProxySourceAddress: a}, "invalid port"},
		{"user without password", egress.SourceOptions{SOCKS5ProxyServer: "proxy.example:1080", SOCKS5ProxySourceAddress: a, SOCKS5ProxyUsername: "u"}, "go together"},
		{"credentials without proxy", egress.SourceOptions{SOCKS5ProxyUsername: "u", SOCKS5ProxyPassword: "p"}, "without socks5_proxy_server"},
	} {
		if _, err := egress.NewSource(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := egress.NewSource(egress.SourceOptions{HAProxyServer: "proxy.example.com:5000", HAProxySourceAddress: a}); err != nil {
		t.Errorf("host name proxy: %v", err)
	}
}

func TestProxyHostNameResolution(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	proxy := startProxy(t, socks5Server("", ""))
	port := netip.MustParseAddrPort(proxy.addr()).Port()
	var asked []string
	src, err := egress.NewSource(egress.SourceOptions{
		Name:                     "named-proxy",
		SOCKS5ProxyServer:        fmt.Sprintf("proxy.test:%d", port),
		SOCKS5ProxySourceAddress: netip.MustParseAddr("127.0.0.2"),
		LookupNetIP: func(_ context.Context, _, host string) ([]netip.Addr, error) {
			asked = append(asked, host)
			// The first address refuses; the second is the proxy.
			return []netip.Addr{netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("127.0.0.1")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// 127.0.0.9 has nothing listening on the port: make sure of it.
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.9:%d", port), time.Second); err == nil {
		c.Close()
		t.Skip("127.0.0.9 unexpectedly accepts on the proxy's port")
	}
	opts := sinkOptions(t, sink)
	opts.Source = src
	c := dial(t, opts)
	send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("named")})
	c.Close()
	if len(asked) != 1 || asked[0] != "proxy.test" {
		t.Errorf("lookups %v", asked)
	}
}
