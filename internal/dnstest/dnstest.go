// Package dnstest runs an in-process authoritative DNS server for tests.
//
// The server listens on 127.0.0.1, UDP and TCP on the same port, and answers
// from an in-memory record store that tests change at run time (all methods
// are safe for concurrent use, including while queries are in flight). It
// uses a private dns.ServeMux, never miekg/dns's global one, so any number of
// servers can run in one test binary.
//
// Behaviour:
//
//   - Names are case-insensitive and may be given with or without the
//     trailing dot.
//   - A name with records of the asked type gets them (NOERROR, AA set);
//     CNAMEs held by the server are followed, at most 8 deep.
//   - A name that exists (it has records of some type, or a name below it
//     does) but lacks the asked type gets NODATA: NOERROR with an empty
//     answer.
//   - Any other name gets NXDOMAIN.
//   - Negative answers carry an SOA for the root zone whose TTL and MINIMUM
//     are Options.NegativeTTL, unless Options.NoSOA is set.
//   - Over UDP a reply larger than the client's EDNS0 buffer (512 bytes
//     without EDNS0) is truncated with TC set; SetTruncate forces TC over UDP
//     for a name so a client must retry over TCP.
//   - SetSecure marks zones as DNSSEC-signed: their answers carry the AD
//     bit when the query sets AD or DO, as a validating resolver's would
//     (for DANE tests; no RRSIGs are served).
//   - SetRcode, SetDelay and SetTTL inject faults and TTLs per name;
//     Queries and QueryLog report what clients asked.
//
// Typical use:
//
//	srv := dnstest.Start(t, `
//	example.com.     300 IN MX 10 mx.example.com.
//	mx.example.com.  300 IN A  127.0.0.1
//	`)
//	srv.SetRcode("broken.example", dns.RcodeServerFailure)
//	resolverAddr := srv.Addr() // "127.0.0.1:port"
package dnstest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Defaults for Options.
const (
	DefaultTTL         = 300
	DefaultNegativeTTL = 60
)

// maxChase bounds CNAME following inside one answer.
const maxChase = 8

// MX is one MX record: preference and exchange host.
type MX struct {
	Pref uint16
	Host string
}

// Options configures a Server.
type Options struct {
	// TTL is the TTL given to records added with the Set* methods
	// (DefaultTTL when 0). SetDefaultTTL changes it later.
	TTL uint32
	// NegativeTTL is the TTL and MINIMUM of the SOA placed in NXDOMAIN and
	// NODATA answers (DefaultNegativeTTL when 0).
	NegativeTTL uint32
	// NoSOA leaves the SOA out of negative answers.
	NoSOA bool
	// Logger receives one debug line per query; nil discards.
	Logger *slog.Logger
}

// Query is one question the server received.
type Query struct {
	Name string // canonical: lower case, fully qualified
	Type uint16
	Net  string // "udp" or "tcp"
}

type typeKey struct {
	name  string
	qtype uint16 // 0 = any type
}

// Server is a running test DNS server. Create it with New or Start.
type Server struct {
	addr   string
	log    *slog.Logger
	udp    *dns.Server
	tcp    *dns.Server
	pc     net.PacketConn
	ln     net.Listener
	served sync.WaitGroup
	done   chan struct{}
	once   sync.Once
	errs   []error

	mu       sync.Mutex
	ttl      uint32
	negTTL   uint32
	noSOA    bool
	records  map[string]map[uint16][]dns.RR
	ttls     map[string]uint32
	rcodes   map[typeKey]int
	delays   map[string]time.Duration
	truncate map[string]bool
	secure   map[string]bool // zones answered with the AD bit
	queries  []Query
}

// New starts a server on 127.0.0.1 (UDP and TCP on one port). The caller
// must Close it.
func New(opts Options) (*Server, error) {
	s := &Server{
		log:      opts.Logger,
		done:     make(chan struct{}),
		ttl:      opts.TTL,
		negTTL:   opts.NegativeTTL,
		noSOA:    opts.NoSOA,
		records:  make(map[string]map[uint16][]dns.RR),
		ttls:     make(map[string]uint32),
		rcodes:   make(map[typeKey]int),
		delays:   make(map[string]time.Duration),
		truncate: make(map[string]bool),
		secure:   make(map[string]bool),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.negTTL == 0 {
		s.negTTL = DefaultNegativeTTL
	}

	pc, l, err := listenPair()
	if err != nil {
		return nil, err
	}
	s.addr = pc.LocalAddr().String()
	s.pc, s.ln = pc, l

	mux := dns.NewServeMux()
	mux.HandleFunc(".", s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: mux}
	s.tcp = &dns.Server{Listener: l, Handler: mux}

	started := make(chan struct{}, 2)
	failed := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		s.served.Add(1)
		go func() {
			defer s.served.Done()
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
			}
		}()
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for range 2 {
		select {
		case <-started:
		case err := <-failed:
			_ = s.Close()
			return nil, fmt.Errorf("dnstest: start server: %w", err)
		case <-timer.C:
			_ = s.Close()
			return nil, errors.New("dnstest: server did not start within 10s")
		}
	}
	return s, nil
}

// listenPair binds a UDP socket on 127.0.0.1 and a TCP listener on the same
// port, retrying a few times if the TCP port happens to be taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("dnstest: listen udp: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		lastErr = err
		_ = pc.Close()
	}
	return nil, nil, fmt.Errorf("dnstest: no port free for both udp and tcp: %w", lastErr)
}

// Start starts a server with default options, loads the zone texts (RFC 1035
// master file format, see LoadZone) and closes the server when the test
// ends. It fails the test on error.
func Start(tb testing.TB, zone ...string) *Server {
	tb.Helper()
	return StartOptions(tb, Options{}, zone...)
}

// StartOptions is Start with options.
func StartOptions(tb testing.TB, opts Options, zone ...string) *Server {
	tb.Helper()
	s, err := New(opts)
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("dnstest: close: %v", err)
		}
	})
	for _, z := range zone {
		if err := s.LoadZone(z); err != nil {
			tb.Fatalf("dnstest: %v", err)
		}
	}
	return s
}

// Addr returns the server address, "127.0.0.1:port", for UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Close stops the server. Queries held by SetDelay are dropped unanswered.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if err := srv.ShutdownContext(ctx); err != nil && ctx.Err() != nil {
				s.errs = append(s.errs, fmt.Errorf("dnstest: shutdown: %w", err))
			}
		}
		// Closing again is harmless and unblocks a server that never
		// reported start-up.
		_ = s.pc.Close()
		_ = s.ln.Close()
		s.served.Wait()
	})
	return errors.Join(s.errs...)
}

// canonical returns the lower-case fully qualified form of name.
func canonical(name string) string {
	return strings.ToLower(dns.Fqdn(strings.TrimSpace(name)))
}

// LoadZone adds the records in text, which is in RFC 1035 master file
// format (owner names should be fully qualified or follow a $ORIGIN;
// records without a TTL get the server's default TTL). Records are added to,
// not replacing, those already held.
func (s *Server) LoadZone(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	zp := dns.NewZoneParser(strings.NewReader(text), ".", "zone")
	zp.SetDefaultTTL(s.ttl)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnstest: parse zone: %w", err)
	}
	for _, rr := range rrs {
		h := rr.Header()
		h.Name = canonical(h.Name)
		s.addLocked(h.Name, h.Rrtype, rr)
	}
	return nil
}

func (s *Server) addLocked(name string, qtype uint16, rrs ...dns.RR) {
	byType := s.records[name]
	if byType == nil {
		byType = make(map[uint16][]dns.RR)
		s.records[name] = byType
	}
	byType[qtype] = append(byType[qtype], rrs...)
}

// set replaces the records of one type at name; no records deletes them.
func (s *Server) set(name string, qtype uint16, rrs []dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(name, qtype)
	if len(rrs) > 0 {
		s.addLocked(name, qtype, rrs...)
	}
}

func (s *Server) deleteLocked(name string, qtype uint16) {
	byType := s.records[name]
	if byType == nil {
		return
	}
	delete(byType, qtype)
	if len(byType) == 0 {
		delete(s.records, name)
	}
}

func (s *Server) hdr(name string, qtype uint16) dns.RR_Header {
	s.mu.Lock()
	ttl := s.ttl
	s.mu.Unlock()
	return dns.RR_Header{Name: name, Rrtype: qtype, Class: dns.ClassINET, Ttl: ttl}
}

// SetMX replaces the MX records of domain; no arguments deletes them. A Host
// of "." (or "") is the root, as in a null MX.
func (s *Server) SetMX(domain string, mx ...MX) {
	name := canonical(domain)
	rrs := make([]dns.RR, 0, len(mx))
	for _, m := range mx {
		host := "."
		if h := strings.TrimSpace(m.Host); h != "" && h != "." {
			host = canonical(h)
		}
		rrs = append(rrs, &dns.MX{Hdr: s.hdr(name, dns.TypeMX), Preference: m.Pref, Mx: host})
	}
	s.set(name, dns.TypeMX, rrs)
}

// SetNullMX gives domain the RFC 7505 null MX: a single "MX 0 .".
func (s *Server) SetNullMX(domain string) {
	s.SetMX(domain, MX{Pref: 0, Host: "."})
}

// SetA replaces the A records of host; no addresses deletes them. It panics
// if an address is not IPv4 (a mistake in the test).
func (s *Server) SetA(host string, ips ...string) {
	name := canonical(host)
	rrs := make([]dns.RR, 0, len(ips))
	for _, ip := range ips {
		a := mustAddr(ip)
		if !a.Is4() {
			panic(fmt.Sprintf("dnstest: SetA(%q): %q is not an IPv4 address", host, ip))
		}
		rrs = append(rrs, &dns.A{Hdr: s.hdr(name, dns.TypeA), A: a.AsSlice()})
	}
	s.set(name, dns.TypeA, rrs)
}

// SetAAAA replaces the AAAA records of host; no addresses deletes them. It
// panics if an address is not IPv6.
func (s *Server) SetAAAA(host string, ips ...string) {
	name := canonical(host)
	rrs := make([]dns.RR, 0, len(ips))
	for _, ip := range ips {
		a := mustAddr(ip)
		if !a.Is6() || a.Is4In6() {
			panic(fmt.Sprintf("dnstest: SetAAAA(%q): %q is not an IPv6 address", host, ip))
		}
		rrs = append(rrs, &dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
	}
	s.set(name, dns.TypeAAAA, rrs)
}

func mustAddr(ip string) netip.Addr {
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		panic(fmt.Sprintf("dnstest: %v", err))
	}
	return a
}

// SetTXT replaces the TXT records of name, one record per string; no
// strings deletes them. Strings longer than 255 bytes are split into
// character-strings of one record.
func (s *Server) SetTXT(name string, txt ...string) {
	n := canonical(name)
	rrs := make([]dns.RR, 0, len(txt))
	for _, t := range txt {
		var parts []string
		for len(t) > 255 {
			parts = append(parts, t[:255])
			t = t[255:]
		}
		parts = append(parts, t)
		rrs = append(rrs, &dns.TXT{Hdr: s.hdr(n, dns.TypeTXT), Txt: parts})
	}
	s.set(n, dns.TypeTXT, rrs)
}

// SetCNAME makes name an alias of target; an empty target deletes it.
func (s *Server) SetCNAME(name, target string) {
	n := canonical(name)
	var rrs []dns.RR
	if strings.TrimSpace(target) != "" {
		rrs = []dns.RR{&dns.CNAME{Hdr: s.hdr(n, dns.TypeCNAME), Target: canonical(target)}}
	}
	s.set(n, dns.TypeCNAME, rrs)
}

// Delete removes the records of the given types at name, or all its records
// when no type is given. Fault settings (SetRcode, SetDelay, ...) stay.
func (s *Server) Delete(name string, types ...uint16) {
	n := canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(types) == 0 {
		delete(s.records, n)
		return
	}
	for _, t := range types {
		s.deleteLocked(n, t)
	}
}

// SetDefaultTTL sets the TTL given to records added by later Set* and
// LoadZone calls.
func (s *Server) SetDefaultTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl = ttl
}

// SetTTL makes every record owned by name be served with ttl, whatever TTL
// it was stored with. ClearTTL undoes it.
func (s *Server) SetTTL(name string, ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttls[canonical(name)] = ttl
}

// ClearTTL removes a SetTTL override.
func (s *Server) ClearTTL(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ttls, canonical(name))
}

// SetNegativeTTL sets the TTL of the SOA in later negative answers.
func (s *Server) SetNegativeTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negTTL = ttl
}

// SetRcode makes every query for name, whatever its type, answered with
// rcode and no records (for example dns.RcodeServerFailure,
// dns.RcodeRefused, dns.RcodeNameError). dns.RcodeSuccess clears it.
func (s *Server) SetRcode(name string, rcode int) {
	s.SetTypeRcode(name, 0, rcode)
}

// SetTypeRcode is SetRcode for one query type only (0 = any type). A
// per-type setting wins over the any-type one.
func (s *Server) SetTypeRcode(name string, qtype uint16, rcode int) {
	k := typeKey{canonical(name), qtype}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, k)
		return
	}
	s.rcodes[k] = rcode
}

// SetDelay holds every answer for name for d before sending it; a delay
// longer than the client's timeout simulates an unresponsive server. Zero
// clears it. Close releases held queries without answering them.
func (s *Server) SetDelay(name string, d time.Duration) {
	n := canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.delays, n)
		return
	}
	s.delays[n] = d
}

// SetSecure marks zone (a name and every name below it) as DNSSEC-signed
// (on) or not (off): answers about names in a secure zone, positive or
// negative, carry the AD bit when the query set AD or DO (RFC 6840
// section 5.7), as a validating resolver's would. An answer that follows a
// CNAME out of a secure zone is not marked. No RRSIGs are served: this
// simulates a validating resolver, not a signed zone.
func (s *Server) SetSecure(zone string, on bool) {
	z := canonical(zone)
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.secure[z] = true
	} else {
		delete(s.secure, z)
	}
}

// secureLocked reports whether name is in a secure zone.
func (s *Server) secureLocked(name string) bool {
	for n := name; ; {
		if s.secure[n] {
			return true
		}
		if n == "." {
			return false
		}
		_, rest, ok := strings.Cut(n, ".")
		if !ok || rest == "" {
			n = "."
		} else {
			n = rest
		}
	}
}

// SetTruncate forces (on) or stops forcing (off) truncation of UDP answers
// for name: the UDP reply has TC set and no records, so the client has to
// repeat the query over TCP, which gets the full answer.
func (s *Server) SetTruncate(name string, on bool) {
	n := canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.truncate[n] = true
	} else {
		delete(s.truncate, n)
	}
}

// Queries returns how many queries of any type, over UDP or TCP, the server
// received for name.
func (s *Server) Queries(name string) int {
	return s.QueriesType(name, 0)
}

// QueriesType returns how many queries of qtype (0 = any) the server
// received for name.
func (s *Server) QueriesType(name string, qtype uint16) int {
	n := canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	count := 0
	for _, q := range s.queries {
		if q.Name == n && (qtype == 0 || q.Type == qtype) {
			count++
		}
	}
	return count
}

// QueryLog returns a copy of every query received, in arrival order.
func (s *Server) QueryLog() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// ResetQueries forgets the queries received so far.
func (s *Server) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

// serveDNS is the handler behind the private mux.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	m := new(dns.Msg)
	m.SetReply(req)
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)

	s.mu.Lock()
	s.queries = append(s.queries, Query{Name: name, Type: q.Qtype, Net: network})
	delay := s.delays[name]
	forceTC := s.truncate[name]
	s.answerLocked(m, name, q.Qtype)
	if opt := req.IsEdns0(); (req.AuthenticatedData || opt != nil && opt.Do()) && m.Rcode != dns.RcodeServerFailure {
		ad := s.secureLocked(name)
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && !s.secureLocked(canonical(c.Target)) {
				ad = false
			}
		}
		m.AuthenticatedData = ad
	}
	s.mu.Unlock()

	s.log.Debug("dnstest query", "name", name, "type", dns.TypeToString[q.Qtype],
		"net", network, "rcode", dns.RcodeToString[m.Rcode], "answers", len(m.Answer),
		"delay", delay)

	if delay > 0 {
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-s.done:
			timer.Stop()
			return
		}
	}

	m.Authoritative = true
	m.RecursionAvailable = true
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
		size = int(opt.UDPSize())
	}
	if network == "udp" {
		if forceTC {
			m.Truncated = true
			m.Answer, m.Ns = nil, nil
			m.Extra = keepOPT(m.Extra)
		} else {
			m.Truncate(size)
		}
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dnstest write", "name", name, "err", err)
	}
}

func keepOPT(extra []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// answerLocked fills m for a question; s.mu is held.
func (s *Server) answerLocked(m *dns.Msg, name string, qtype uint16) {
	if rc, ok := s.rcodes[typeKey{name, qtype}]; ok {
		m.Rcode = rc
		return
	}
	if rc, ok := s.rcodes[typeKey{name, 0}]; ok {
		m.Rcode = rc
		return
	}
	cur := name
	for range maxChase {
		byType := s.records[cur]
		if rrs := byType[qtype]; len(rrs) > 0 {
			m.Answer = append(m.Answer, s.copies(rrs)...)
			return
		}
		cname := byType[dns.TypeCNAME]
		if qtype == dns.TypeCNAME || len(cname) == 0 {
			break
		}
		m.Answer = append(m.Answer, s.copies(cname[:1])...)
		cur = cname[0].(*dns.CNAME).Target
	}
	if !s.existsLocked(cur) {
		m.Rcode = dns.RcodeNameError
	}
	if !s.noSOA {
		m.Ns = append(m.Ns, &dns.SOA{
			Hdr:     dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negTTL},
			Ns:      "ns.dnstest.",
			Mbox:    "hostmaster.dnstest.",
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			Minttl:  s.negTTL,
		})
	}
}

// copies returns copies of rrs with any SetTTL override applied.
func (s *Server) copies(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		c := dns.Copy(rr)
		if ttl, ok := s.ttls[c.Header().Name]; ok {
			c.Header().Ttl = ttl
		}
		out = append(out, c)
	}
	return out
}

// existsLocked reports whether name owns records or is an empty
// non-terminal (a name below it owns records).
func (s *Server) existsLocked(name string) bool {
	if name == "." || len(s.records[name]) > 0 {
		return true
	}
	suffix := "." + name
	for owner := range s.records {
		if strings.HasSuffix(owner, suffix) {
			return true
		}
	}
	return false
}
