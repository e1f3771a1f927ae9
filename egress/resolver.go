package egress

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver defaults; see ResolverOptions.
const (
	DefaultResolvConf     = "/etc/resolv.conf"
	DefaultDNSTimeout     = 2 * time.Second
	DefaultDNSAttempts    = 2
	DefaultDNSCacheSize   = 64 * 1024
	DefaultDNSMaxTTL      = time.Hour
	DefaultDNSNegativeTTL = 5 * time.Minute
	DefaultDNSFailureTTL  = 5 * time.Second
	// EDNS0UDPSize is the EDNS0 buffer size advertised in queries (the
	// DNS Flag Day 2020 value).
	EDNS0UDPSize = 1232
)

// maxCNAMEChain bounds how many CNAME hops a lookup follows.
const maxCNAMEChain = 8

// ResolverOptions configures a Resolver. The zero value reads
// /etc/resolv.conf and uses the defaults above.
type ResolverOptions struct {
	// Servers are the recursive resolvers to ask, "host:port" (a bare host
	// means port 53), tried in order. Empty means the nameservers of
	// ResolvConf.
	Servers []string
	// ResolvConf is the resolv.conf read when Servers is empty
	// (DefaultResolvConf when ""). Its timeout and attempts options are
	// used when Timeout and Attempts are zero.
	ResolvConf string
	// Timeout bounds one exchange with one server (UDP, and TCP again when
	// the UDP answer is truncated). Default DefaultDNSTimeout.
	Timeout time.Duration
	// Attempts is how many times the server list is tried before a lookup
	// fails. Default DefaultDNSAttempts.
	Attempts int
	// CacheSize bounds the number of cached answers (LRU). Default
	// DefaultDNSCacheSize; negative disables the cache.
	CacheSize int
	// MinTTL and MaxTTL clamp the TTL of positive answers. MinTTL defaults
	// to 0 (as published), MaxTTL to DefaultDNSMaxTTL.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL caches NXDOMAIN and NODATA answers: the SOA-derived TTL
	// (RFC 2308) capped at NegativeTTL, or NegativeTTL when there is no
	// SOA. Default DefaultDNSNegativeTTL; at least MinTTL.
	NegativeTTL time.Duration
	// FailureTTL caches temporary failures (SERVFAIL, timeouts, ...) so a
	// broken domain is not asked again for every message. Default
	// DefaultDNSFailureTTL; negative disables. Cancellation by the caller
	// is never cached.
	FailureTTL time.Duration
	// Rand orders MX hosts of equal preference. Nil uses the
	// goroutine-safe global source; tests pass a seeded generator (the
	// Resolver serialises its use).
	Rand *rand.Rand
	// Logger receives debug records of failed exchanges. Nil discards.
	Logger *slog.Logger
	// Now is the clock for cache expiry; nil means time.Now. For tests.
	Now func() time.Time
	// TrustAD marks Servers as DNSSEC-validating resolvers reached over a
	// trusted path (on the host, or over a secured link): queries then ask
	// for the AD bit (RFC 6840 section 5.7) and answers that carry it are
	// taken as DNSSEC-secure (MXPlan.Secure, MXHost.Secure, TLSAResult).
	// Without it nothing is secure and DANE never applies: an AD bit from
	// an untrusted path could be forged.
	TrustAD bool
}

// Resolver looks up MX, A, AAAA, TXT and TLSA records with miekg/dns: EDNS0 (1232
// byte buffer), retry over TCP when an answer is truncated, servers tried
// in order, a TTL-respecting LRU cache of positive and negative answers,
// and deduplication of concurrent identical queries. It is safe for
// concurrent use.
type Resolver struct {
	servers     []string
	timeout     time.Duration
	attempts    int
	minTTL      time.Duration
	maxTTL      time.Duration
	negativeTTL time.Duration
	failureTTL  time.Duration
	trustAD     bool
	log         *slog.Logger
	now         func() time.Time
	udp         *dns.Client
	tcp         *dns.Client
	cache       *dnsCache
	flights     flightGroup

	randMu sync.Mutex
	rand   *rand.Rand
}

// NewResolver returns a Resolver. It fails if Servers is empty and the
// resolv.conf cannot be read or lists no nameserver, or if a server
// address is malformed.
func NewResolver(opts ResolverOptions) (*Resolver, error) {
	r := &Resolver{
		timeout:     opts.Timeout,
		attempts:    opts.Attempts,
		minTTL:      max(opts.MinTTL, 0),
		maxTTL:      opts.MaxTTL,
		negativeTTL: opts.NegativeTTL,
		failureTTL:  opts.FailureTTL,
		trustAD:     opts.TrustAD,
		log:         opts.Logger,
		now:         opts.Now,
		rand:        opts.Rand,
	}
	servers := opts.Servers
	if len(servers) == 0 {
		path := opts.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		cfg, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("egress: resolver: read %s: %w", path, err)
		}
		for _, s := range cfg.Servers {
			servers = append(servers, net.JoinHostPort(s, cfg.Port))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("egress: resolver: no nameserver in %s", path)
		}
		if r.timeout == 0 && cfg.Timeout > 0 {
			r.timeout = time.Duration(cfg.Timeout) * time.Second
		}
		if r.attempts == 0 && cfg.Attempts > 0 {
			r.attempts = cfg.Attempts
		}
	}
	for _, s := range servers {
		addr, err := normaliseServer(s)
		if err != nil {
			return nil, fmt.Errorf("egress: resolver: %w", err)
		}
		r.servers = append(r.servers, addr)
	}
	if r.timeout <= 0 {
		r.timeout = DefaultDNSTimeout
	}
	if r.attempts <= 0 {
		r.attempts = DefaultDNSAttempts
	}
	if r.maxTTL <= 0 {
		r.maxTTL = DefaultDNSMaxTTL
	}
	r.maxTTL = max(r.maxTTL, r.minTTL)
	if r.negativeTTL <= 0 {
		r.negativeTTL = DefaultDNSNegativeTTL
	}
	r.negativeTTL = max(r.negativeTTL, r.minTTL)
	if r.failureTTL == 0 {
		r.failureTTL = DefaultDNSFailureTTL
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	size := opts.CacheSize
	if size == 0 {
		size = DefaultDNSCacheSize
	}
	r.cache = newDNSCache(size)
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: EDNS0UDPSize}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	return r, nil
}

// normaliseServer turns "host", "host:port", "[v6]:port" or a bare IPv6
// address into "host:port".
func normaliseServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") || s == "" {
			return "", fmt.Errorf("bad server address %q: %w", s, err)
		}
		return net.JoinHostPort(s, "53"), nil
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || host == "" {
		return "", fmt.Errorf("bad server address %q", s)
	}
	return net.JoinHostPort(host, port), nil
}

// Servers returns the servers asked, in order, as "host:port".
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// rrset is the useful part of one answer.
type rrset struct {
	name     string // the name asked
	qtype    uint16
	nxdomain bool
	mx       []mxRecord   // MX answers, in answer order
	addrs    []netip.Addr // A or AAAA answers, in answer order
	txt      []string     // TXT answers, each record's strings joined
	tlsa     []TLSA       // TLSA answers
	// secure: every answer behind the set carried the AD bit from a
	// trusted resolver (ResolverOptions.TrustAD).
	secure  bool
	expires time.Time

	// For MX answers, computed once: hosts sorted by preference then name,
	// and their site name.
	sortedMX []mxRecord
	site     string
}

type mxRecord struct {
	pref uint16
	host string // lower case, without the trailing dot; "" for the root (null MX)
}

// lookup answers one question from the cache or the network.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*rrset, error) {
	k := cacheKey{name: name, qtype: qtype}
	if e, ok := r.cache.get(k, r.now()); ok {
		return e.set, e.err
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(name, qtype, err)
	}
	f := r.flights.join(ctx, k,
		func(fctx context.Context) (*rrset, error) { return r.resolve(fctx, name, qtype) },
		func(set *rrset, err error) { r.store(k, set, err) })
	select {
	case <-f.done:
		return f.set, f.err
	default:
	}
	select {
	case <-f.done:
		return f.set, f.err
	case <-ctx.Done():
		r.flights.leave(k, f)
		return nil, ctxError(name, qtype, ctx.Err())
	}
}

func ctxError(name string, qtype uint16, err error) error {
	return &DNSError{Name: name, Type: dns.TypeToString[qtype], Rcode: -1, Temporary: true, Err: err}
}

// store caches a result: answers until they expire, temporary failures for
// FailureTTL.
func (r *Resolver) store(k cacheKey, set *rrset, err error) {
	if err == nil {
		if set.expires.After(r.now()) {
			r.cache.put(&cacheEntry{key: k, set: set, expires: set.expires})
		}
		return
	}
	if r.failureTTL > 0 && IsTemporary(err) && !errors.Is(err, context.Canceled) {
		r.cache.put(&cacheEntry{key: k, err: err, expires: r.now().Add(r.failureTTL)})
	}
}

// resolve asks the servers, following CNAMEs the servers did not chase.
func (r *Resolver) resolve(ctx context.Context, name string, qtype uint16) (*rrset, error) {
	set := &rrset{name: name, qtype: qtype, secure: r.trustAD}
	target := name
	ttl := time.Duration(-1)
	for range maxCNAMEChain {
		msg, err := r.exchange(ctx, target, qtype)
		if err != nil {
			return nil, err
		}
		set.secure = set.secure && msg.AuthenticatedData
		if msg.Rcode == dns.RcodeNameError {
			set.nxdomain = true
			set.expires = r.now().Add(r.negativeTTLOf(msg))
			return set, nil
		}
		final, found, chainTTL := collect(msg, target, qtype, set)
		ttl = minTTL(ttl, chainTTL)
		if found {
			set.expires = r.now().Add(min(max(ttl, r.minTTL), r.maxTTL))
			if qtype == dns.TypeMX {
				set.sortedMX = sortMX(set.mx)
				hosts := make([]string, len(set.sortedMX))
				for i, mx := range set.sortedMX {
					hosts[i] = mx.host
				}
				set.site = SiteName(hosts)
			}
			return set, nil
		}
		if final == target {
			// NODATA: the name exists without records of this type.
			set.expires = r.now().Add(r.negativeTTLOf(msg))
			return set, nil
		}
		target = final // a CNAME the server did not follow
	}
	return nil, &DNSError{Name: name, Type: dns.TypeToString[qtype], Rcode: -1, Temporary: true,
		Err: fmt.Errorf("CNAME chain longer than %d", maxCNAMEChain)}
}

func minTTL(a, b time.Duration) time.Duration {
	if a < 0 {
		return b
	}
	if b < 0 {
		return a
	}
	return min(a, b)
}

// collect follows the CNAME chain from name through msg's answer section
// and adds the records of qtype owned by the end of the chain to set. It
// returns the end of the chain, whether records were found, and the lowest
// TTL of the records used (-1 if none).
func collect(msg *dns.Msg, name string, qtype uint16, set *rrset) (string, bool, time.Duration) {
	ttl := time.Duration(-1)
	cur := name
	for range maxCNAMEChain {
		next := ""
		for _, rr := range msg.Answer {
			h := rr.Header()
			if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME && strings.EqualFold(h.Name, cur) {
				next = strings.ToLower(dns.Fqdn(c.Target))
				ttl = minTTL(ttl, time.Duration(h.Ttl)*time.Second)
				break
			}
		}
		if next == "" || next == cur {
			break
		}
		cur = next
	}
	found := false
	for _, rr := range msg.Answer {
		h := rr.Header()
		if h.Rrtype != qtype || !strings.EqualFold(h.Name, cur) {
			continue
		}
		switch v := rr.(type) {
		case *dns.MX:
			host := strings.TrimSuffix(strings.ToLower(v.Mx), ".")
			set.mx = append(set.mx, mxRecord{pref: v.Preference, host: host})
		case *dns.A:
			if a, ok := netip.AddrFromSlice(v.A); ok {
				set.addrs = append(set.addrs, a.Unmap())
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(v.AAAA); ok {
				set.addrs = append(set.addrs, a)
			}
		case *dns.TXT:
			set.txt = append(set.txt, strings.Join(v.Txt, ""))
		case *dns.TLSA:
			data, err := hex.DecodeString(v.Certificate)
			if err != nil {
				continue
			}
			set.tlsa = append(set.tlsa, TLSA{Usage: v.Usage, Selector: v.Selector, MatchingType: v.MatchingType, Data: data})
		default:
			continue
		}
		found = true
		ttl = minTTL(ttl, time.Duration(h.Ttl)*time.Second)
	}
	return cur, found, ttl
}

// negativeTTLOf is the cache time of a negative answer (RFC 2308 section 5:
// the lesser of the SOA's TTL and MINIMUM), capped at NegativeTTL.
func (r *Resolver) negativeTTLOf(msg *dns.Msg) time.Duration {
	for _, rr := range msg.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			return min(max(ttl, r.minTTL), r.negativeTTL)
		}
	}
	return r.negativeTTL
}

// exchange asks each server in turn, Attempts times over, until one gives
// an authoritative outcome (NOERROR or NXDOMAIN).
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	typ := dns.TypeToString[qtype]
	var last *DNSError
	for attempt := range r.attempts {
		for _, server := range r.servers {
			if err := ctx.Err(); err != nil {
				return nil, &DNSError{Name: name, Type: typ, Server: server, Rcode: -1, Temporary: true, Err: err}
			}
			msg, err := r.exchangeOne(ctx, server, name, qtype)
			if err != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				last = &DNSError{Name: name, Type: typ, Server: server, Rcode: -1, Temporary: true, Err: err}
				r.log.Debug("dns exchange failed", "name", name, "type", typ, "server", server,
					"attempt", attempt+1, "err", err)
				continue
			}
			switch msg.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return msg, nil
			}
			rc := dns.RcodeToString[msg.Rcode]
			if rc == "" {
				rc = "rcode " + strconv.Itoa(msg.Rcode)
			}
			last = &DNSError{Name: name, Type: typ, Server: server, Rcode: msg.Rcode, Temporary: true,
				Err: fmt.Errorf("server answered %s", rc)}
			r.log.Debug("dns exchange failed", "name", name, "type", typ, "server", server,
				"attempt", attempt+1, "rcode", rc)
		}
	}
	return nil, last
}

// exchangeOne asks one server over UDP, repeating the query over TCP when
// the answer is truncated. A FORMERR to the EDNS0 query is retried once
// without EDNS0 for servers that do not implement it.
func (r *Resolver) exchangeOne(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = r.trustAD
	m.SetEdns0(EDNS0UDPSize, false)
	msg, err := r.roundTrip(ctx, r.udp, server, m)
	if err == nil && msg.Rcode == dns.RcodeFormatError && msg.IsEdns0() == nil {
		m.Extra = nil
		msg, err = r.roundTrip(ctx, r.udp, server, m)
	}
	if err == nil && msg.Truncated {
		msg, err = r.roundTrip(ctx, r.tcp, server, m)
	}
	return msg, err
}

// roundTrip sends m with client and reads the matching reply, honouring
// ctx cancellation (miekg/dns itself only honours deadlines).
func (r *Resolver) roundTrip(ctx context.Context, c *dns.Client, server string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m.Id = dns.Id()
	co, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", c.Net, server, err)
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { _ = co.SetDeadline(time.Now()) })
	defer stop()
	msg, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s exchange with %s: %w", c.Net, server, ctx.Err())
		}
		return nil, fmt.Errorf("%s exchange with %s: %w", c.Net, server, err)
	}
	q := m.Question[0]
	if len(msg.Question) != 1 || msg.Question[0].Qtype != q.Qtype || !strings.EqualFold(msg.Question[0].Name, q.Name) {
		return nil, fmt.Errorf("%s exchange with %s: reply does not match the question", c.Net, server)
	}
	return msg, nil
}

// shuffle permutes n elements uniformly at random with swap.
func (r *Resolver) shuffle(n int, swap func(i, j int)) {
	if n < 2 {
		return
	}
	if r.rand == nil {
		rand.Shuffle(n, swap)
		return
	}
	r.randMu.Lock()
	defer r.randMu.Unlock()
	r.rand.Shuffle(n, swap)
}

// LookupTXT returns the TXT records of name, each record's character
// strings joined into one string (RFC 7208 section 3.3 style), as used by
// MTA-STS. A name without TXT records, or that does not exist, gives no
// records and no error; other failures are a temporary *DNSError.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	n, err := fqdn(name)
	if err != nil {
		return nil, fmt.Errorf("egress: lookup TXT %q: %w", name, err)
	}
	set, err := r.lookup(ctx, n, dns.TypeTXT)
	if err != nil {
		return nil, fmt.Errorf("egress: lookup TXT %s: %w", strings.TrimSuffix(n, "."), err)
	}
	return append([]string(nil), set.txt...), nil
}
