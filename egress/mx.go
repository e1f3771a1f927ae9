package egress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mtakit/mtakit/shaping"
)

// maxParallelHosts bounds concurrent address lookups within one ResolveMX.
const maxParallelHosts = 8

// MXPlan is where mail for a routing domain goes: the mail hosts in the
// order to try them, with their addresses, and the site name that names
// the ready queue.
type MXPlan struct {
	// Domain is the routing domain: lower case without a trailing dot, or
	// the address literal as given.
	Domain string
	// Port is the port given with the domain ("example.com:2525",
	// "[10.0.0.1]:2525"); 0 means none (use 25 or the path config's).
	Port uint16
	// SiteName is KumoMTA's site name for the domain (see SiteName); for an
	// address literal it is the address ("10.0.0.1", "::1", or with a port
	// "10.0.0.1:2525", "[::1]:2525").
	SiteName string
	// Hosts are the mail hosts by ascending preference; hosts of equal
	// preference are in random order, new for each ResolveMX call.
	Hosts []MXHost
	// IsMX is true when the hosts come from MX records, false for the
	// implicit MX (RFC 5321 section 5.1: the domain's own A/AAAA records)
	// and for address literals.
	IsMX bool
	// IsDomainLiteral is true when the domain is an address literal such
	// as "[10.0.0.1]" or "[IPv6:::1]"; no DNS was consulted.
	IsDomainLiteral bool
	// Expires is when the earliest DNS record behind the plan expires
	// (zero for literals). Resolve again after it to follow DNS changes.
	Expires time.Time
	// Secure reports that the MX answer (or, for the implicit MX, the
	// answer that there is no MX) was DNSSEC-validated by a trusted
	// resolver (ResolverOptions.TrustAD): the first condition of DANE
	// (RFC 7672 section 2.2).
	Secure bool
}

// MXHost is one mail host of a plan.
type MXHost struct {
	// Name is the host name, lower case without a trailing dot (for an
	// address literal, the address).
	Name string
	// Preference is the MX preference; 0 for the implicit MX and literals.
	Preference uint16
	// Addrs are the host's addresses, IPv4 (A) before IPv6 (AAAA), in the
	// order DNS returned them.
	Addrs []netip.Addr
	// Err says why Addrs is empty when the lookup failed or found nothing;
	// other hosts of the plan may still be usable.
	Err error
	// Secure reports that every address answer of the host was
	// DNSSEC-validated by a trusted resolver (ResolverOptions.TrustAD).
	Secure bool
}

// MXAddr is one address to try, with the host it belongs to.
type MXAddr struct {
	Host       string
	Preference uint16
	Addr       netip.Addr
}

// Addrs returns every address of the plan in the order to try them: host
// by host as in Hosts, each host's addresses in order.
func (p *MXPlan) Addrs() []MXAddr {
	var out []MXAddr
	for _, h := range p.Hosts {
		for _, a := range h.Addrs {
			out = append(out, MXAddr{Host: h.Name, Preference: h.Preference, Addr: a})
		}
	}
	return out
}

// ResolveMX resolves a routing domain to an MXPlan.
//
// domain is a DNS name, optionally with ":port", or an address literal
// "[10.0.0.1]", "[IPv6:2001:db8::1]" (KumoMTA also accepts the untagged
// "[::1]"), optionally with a port. Literals resolve to themselves without
// DNS.
//
// Outcomes: MX records give hosts ordered by preference, equal preferences
// shuffled. No MX records (NODATA) gives the implicit MX, the domain
// itself. A null MX gives ErrNullMX and NXDOMAIN gives ErrNXDomain, both
// permanent. SERVFAIL, REFUSED, timeouts and network errors give a
// temporary *DNSError. Hosts whose addresses cannot be found are kept with
// MXHost.Err set; if no host has an address the error wraps
// ErrNoAddresses and is temporary. Every error wraps a *DNSError, so
// IsTemporary and IsPermanent classify it.
func (r *Resolver) ResolveMX(ctx context.Context, domain string) (*MXPlan, error) {
	given := strings.TrimSpace(domain)
	host, port, hasPort := CutPort(given)
	if strings.HasPrefix(host, "[") {
		addr, lport, err := parseAddressLiteral(host, port, hasPort)
		if err != nil {
			return nil, fmt.Errorf("egress: resolve MX for %q: %w", given, err)
		}
		site := addr.String()
		if lport != 0 {
			site = netip.AddrPortFrom(addr, lport).String()
		}
		return &MXPlan{
			Domain:          given,
			Port:            lport,
			SiteName:        site,
			Hosts:           []MXHost{{Name: addr.String(), Addrs: []netip.Addr{addr}}},
			IsDomainLiteral: true,
		}, nil
	}
	name, err := fqdn(host)
	if err != nil {
		return nil, fmt.Errorf("egress: resolve MX for %q: %w", given, err)
	}
	plain := strings.TrimSuffix(name, ".")

	set, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, fmt.Errorf("egress: resolve MX for %s: %w", plain, err)
	}
	if set.nxdomain {
		return nil, fmt.Errorf("egress: resolve MX for %s: %w", plain,
			&DNSError{Name: name, Type: "MX", Rcode: dns.RcodeNameError, Err: ErrNXDomain})
	}
	for _, mx := range set.mx {
		if mx.host == "" {
			return nil, fmt.Errorf("egress: resolve MX for %s: %w", plain,
				&DNSError{Name: name, Type: "MX", Rcode: -1, Err: ErrNullMX})
		}
	}

	plan := &MXPlan{Domain: plain, Port: port, IsMX: len(set.sortedMX) > 0, Expires: set.expires, Secure: set.secure}
	var siteHosts []string
	if plan.IsMX {
		seen := make(map[string]bool, len(set.sortedMX))
		for _, mx := range set.sortedMX {
			siteHosts = append(siteHosts, withPort(mx.host, port, hasPort))
			if !seen[mx.host] {
				seen[mx.host] = true
				plan.Hosts = append(plan.Hosts, MXHost{Name: mx.host, Preference: mx.pref})
			}
		}
	} else {
		siteHosts = []string{withPort(plain, port, hasPort)}
		plan.Hosts = []MXHost{{Name: plain}}
	}
	if hasPort || set.site == "" {
		plan.SiteName = SiteName(siteHosts)
	} else {
		plan.SiteName = set.site
	}

	if err := r.resolveHosts(ctx, plan); err != nil {
		return nil, fmt.Errorf("egress: resolve MX for %s: %w", plain, err)
	}
	r.shuffleEqualPreference(plan.Hosts)
	return plan, nil
}

func withPort(host string, port uint16, hasPort bool) string {
	if !hasPort {
		return host
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// resolveHosts fills in the addresses of plan.Hosts, looking them up in
// parallel, and fails if none has an address.
func (r *Resolver) resolveHosts(ctx context.Context, plan *MXPlan) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sema = make(chan struct{}, maxParallelHosts)
	)
	expires := plan.Expires
	fill := func(h *MXHost, addrs []netip.Addr, exp time.Time, secure bool, err error) {
		h.Addrs, h.Err, h.Secure = addrs, err, secure
		if err == nil {
			mu.Lock()
			if expires.IsZero() || exp.Before(expires) {
				expires = exp
			}
			mu.Unlock()
		}
	}
	// Cached hosts first, without goroutines; then the rest in parallel.
	var misses []*MXHost
	for i := range plan.Hosts {
		h := &plan.Hosts[i]
		if addrs, exp, secure, err, ok := r.cachedAddrs(h.Name + "."); ok {
			fill(h, addrs, exp, secure, err)
		} else {
			misses = append(misses, h)
		}
	}
	for _, h := range misses {
		do := func() {
			addrs, exp, secure, err := r.lookupAddrs(ctx, h.Name+".")
			fill(h, addrs, exp, secure, err)
		}
		if len(misses) == 1 {
			do()
			break
		}
		wg.Add(1)
		sema <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sema }()
			do()
		}()
	}
	wg.Wait()
	plan.Expires = expires

	var problems []string
	for _, h := range plan.Hosts {
		if len(h.Addrs) > 0 {
			return nil
		}
		if h.Err != nil {
			problems = append(problems, h.Err.Error())
		}
		// A cancelled caller gets the cancellation, not "no addresses".
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(h.Err, ctxErr) {
			return h.Err
		}
	}
	return &DNSError{Name: plan.Domain, Type: "A/AAAA", Rcode: -1, Temporary: true,
		Err: fmt.Errorf("%w (%s)", ErrNoAddresses, strings.Join(problems, "; "))}
}

// shuffleEqualPreference randomises the order of each run of hosts with
// the same preference (hosts must be sorted by preference).
func (r *Resolver) shuffleEqualPreference(hosts []MXHost) {
	for start := 0; start < len(hosts); {
		end := start + 1
		for end < len(hosts) && hosts[end].Preference == hosts[start].Preference {
			end++
		}
		run := hosts[start:end]
		r.shuffle(len(run), func(i, j int) { run[i], run[j] = run[j], run[i] })
		start = end
	}
}

// ResolveHost returns the addresses of one host: an IP address ("10.0.0.1",
// "::1"), an address literal ("[10.0.0.1]", "[IPv6:::1]") or a DNS name,
// which is looked up for A and AAAA records (IPv4 first). It is meant for
// mx_list and smart host entries; split a ":port" off first with CutPort.
// Errors wrap a *DNSError: ErrNXDomain is permanent, ErrNoAddresses and
// failures are temporary.
func (r *Resolver) ResolveHost(ctx context.Context, host string) ([]netip.Addr, error) {
	h := strings.TrimSpace(host)
	if strings.HasPrefix(h, "[") {
		addr, port, err := parseAddressLiteral(h, 0, false)
		if err == nil && port != 0 {
			err = &DNSError{Name: h, Rcode: -1, Err: fmt.Errorf("%w: port inside the literal; use CutPort", ErrInvalidDomain)}
		}
		if err != nil {
			return nil, fmt.Errorf("egress: resolve host %q: %w", host, err)
		}
		return []netip.Addr{addr}, nil
	}
	if a, err := netip.ParseAddr(h); err == nil && a.Zone() == "" {
		return []netip.Addr{a}, nil
	}
	name, err := fqdn(h)
	if err != nil {
		return nil, fmt.Errorf("egress: resolve host %q: %w", host, err)
	}
	addrs, _, _, err := r.lookupAddrs(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("egress: resolve host %s: %w", strings.TrimSuffix(name, "."), err)
	}
	return addrs, nil
}

// addrResult is the outcome of one A or AAAA lookup.
type addrResult struct {
	set *rrset
	err error
}

// lookupAddrs looks up A and AAAA for a canonical name in parallel and
// combines them (see combineAddrs).
func (r *Resolver) lookupAddrs(ctx context.Context, name string) ([]netip.Addr, time.Time, bool, error) {
	if addrs, exp, secure, err, ok := r.cachedAddrs(name); ok {
		return addrs, exp, secure, err
	}
	var v4, v6 addrResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		v6.set, v6.err = r.lookup(ctx, name, dns.TypeAAAA)
	}()
	v4.set, v4.err = r.lookup(ctx, name, dns.TypeA)
	<-done
	return r.combineAddrs(name, v4, v6)
}

// cachedAddrs answers lookupAddrs from the cache alone, reporting false if
// either family is not cached.
func (r *Resolver) cachedAddrs(name string) ([]netip.Addr, time.Time, bool, error, bool) {
	now := r.now()
	e4, ok4 := r.cache.get(cacheKey{name, dns.TypeA}, now)
	if !ok4 {
		return nil, time.Time{}, false, nil, false
	}
	e6, ok6 := r.cache.get(cacheKey{name, dns.TypeAAAA}, now)
	if !ok6 {
		return nil, time.Time{}, false, nil, false
	}
	addrs, exp, secure, err := r.combineAddrs(name, addrResult{e4.set, e4.err}, addrResult{e6.set, e6.err})
	return addrs, exp, secure, err, true
}

// combineAddrs merges the A and AAAA outcomes: addresses from either family
// win over a failure of the other; with none, a failure is returned as is,
// NXDOMAIN as ErrNXDomain, and an empty answer as ErrNoAddresses.
//
// The addresses are secure when every answer that arrived was: a family
// whose lookup failed does not make the other insecure, since a
// validating resolver fails a forged answer rather than passing it on.
func (r *Resolver) combineAddrs(name string, v4, v6 addrResult) ([]netip.Addr, time.Time, bool, error) {
	var addrs []netip.Addr
	var expires time.Time
	nx := false
	secure, answered := true, false
	for _, res := range []addrResult{v4, v6} {
		if res.err != nil {
			continue
		}
		answered = true
		secure = secure && res.set.secure
		if res.set.nxdomain {
			nx = true
		}
		addrs = append(addrs, res.set.addrs...)
		if expires.IsZero() || res.set.expires.Before(expires) {
			expires = res.set.expires
		}
	}
	if len(addrs) > 0 {
		if v4.err != nil || v6.err != nil {
			r.log.Debug("address lookup partly failed", "name", name,
				"a_err", errString(v4.err), "aaaa_err", errString(v6.err))
		}
		return addrs, expires, secure && answered, nil
	}
	switch {
	case v4.err != nil:
		return nil, time.Time{}, false, v4.err
	case v6.err != nil:
		return nil, time.Time{}, false, v6.err
	case nx:
		return nil, time.Time{}, false, &DNSError{Name: name, Type: "A/AAAA", Rcode: dns.RcodeNameError, Err: ErrNXDomain}
	default:
		return nil, time.Time{}, false, &DNSError{Name: name, Type: "A/AAAA", Rcode: -1, Temporary: true, Err: ErrNoAddresses}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// fqdn validates a DNS name and returns its lower-case fully qualified
// form.
func fqdn(name string) (string, error) {
	labels, ok := dnsLabels(name)
	if !ok || len(labels) == 0 {
		return "", &DNSError{Name: name, Rcode: -1, Err: ErrInvalidDomain}
	}
	for _, l := range labels {
		if strings.ContainsAny(l, " \t\r\n\\()\";@$[]") {
			return "", &DNSError{Name: name, Rcode: -1, Err: ErrInvalidDomain}
		}
	}
	return strings.Join(labels, ".") + ".", nil
}

// parseAddressLiteral parses "[ip]" or "[IPv6:ip]" as KumoMTA does,
// including a ":port" inside the brackets. outerPort is a port already cut
// from after the closing bracket; giving both is an error.
func parseAddressLiteral(s string, outerPort uint16, hasOuter bool) (netip.Addr, uint16, error) {
	invalid := func(why string) error {
		return &DNSError{Name: s, Rcode: -1, Err: fmt.Errorf("%w: %s", ErrInvalidDomain, why)}
	}
	if !strings.HasSuffix(s, "]") {
		return netip.Addr{}, 0, invalid("address literal has no closing ]")
	}
	inner := strings.ToLower(s[1 : len(s)-1])
	port := outerPort
	if h, p, ok := CutPort(inner); ok && !strings.HasPrefix(inner, "ipv6:") {
		if hasOuter {
			return netip.Addr{}, 0, invalid("port given both inside and outside the brackets")
		}
		inner, port = h, p
	}
	if v6, ok := strings.CutPrefix(inner, "ipv6:"); ok {
		a, err := netip.ParseAddr(v6)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Addr{}, 0, invalid("bad IPv6 address " + v6)
		}
		return a, port, nil
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, 0, invalid("bad address " + inner)
	}
	return a, port, nil
}

// MXHostNames returns domain's MX host names ordered by preference, then
// name (the order SiteName expects), or the domain itself when it has no
// MX. A null MX gives shaping.ErrNullMX. It has the signature of
// shaping.Options.LookupMX, so a shaping configuration rolls up MX sites
// with the same resolver the queue engine delivers with.
func (r *Resolver) MXHostNames(ctx context.Context, domain string) ([]string, error) {
	plan, err := r.ResolveMX(ctx, domain)
	if errors.Is(err, ErrNullMX) {
		return nil, shaping.ErrNullMX
	}
	if err != nil {
		return nil, err
	}
	hosts := slices.Clone(plan.Hosts)
	slices.SortStableFunc(hosts, func(a, b MXHost) int {
		return cmp.Or(cmp.Compare(a.Preference, b.Preference), strings.Compare(a.Name, b.Name))
	})
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	return names, nil
}
