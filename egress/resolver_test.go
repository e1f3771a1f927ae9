package egress_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
)

// clock is a manual clock for cache expiry tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newResolver returns a resolver asking only srv, with short timeouts.
func newResolver(t testing.TB, srv *dnstest.Server, mod ...func(*egress.ResolverOptions)) *egress.Resolver {
	t.Helper()
	opts := egress.ResolverOptions{
		Servers:  []string{srv.Addr()},
		Timeout:  time.Second,
		Attempts: 1,
	}
	for _, m := range mod {
		m(&opts)
	}
	r, err := egress.NewResolver(opts)
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	return r
}

func hostNames(p *egress.MXPlan) []string {
	var out []string
	for _, h := range p.Hosts {
		out = append(out, h.Name)
	}
	return out
}

const testZone = `
$ORIGIN test.
ordered      MX 30 c.mx.ordered
ordered      MX 10 a.mx.ordered
ordered      MX 20 b.mx.ordered
a.mx.ordered A 192.0.2.1
b.mx.ordered A 192.0.2.2
c.mx.ordered A 192.0.2.3

implicit4    A    192.0.2.10
implicit6    AAAA 2001:db8::10
dual         MX 10 mx.dual
mx.dual      A    192.0.2.20
mx.dual      A    192.0.2.21
mx.dual      AAAA 2001:db8::20

nullmx       MX 0 .
mixednull    MX 0 .
mixednull    MX 10 mx.dual

noaddr       MX 10 missing.noaddr
partial      MX 10 missing.partial
partial      MX 20 mx.dual
halfbroken   MX 10 mx.halfbroken
mx.halfbroken A    192.0.2.30
mx.halfbroken AAAA 2001:db8::30
aliased      MX 10 alias.aliased
alias.aliased CNAME mx.dual.test.
ported       MX 10 mx.dual

rollup1      MX 10 mx1.provider
rollup1      MX 10 mx2.provider
rollup2      MX 10 mx2.provider
rollup2      MX 10 mx1.provider
mx1.provider A 192.0.2.41
mx2.provider A 192.0.2.42
`

const gmailZone = `
$ORIGIN gmail.com.
@ 86400 MX 5 gmail-smtp-in.l.google.com.
@ 86400 MX 10 alt1.gmail-smtp-in.l.google.com.
@ 86400 MX 20 alt2.gmail-smtp-in.l.google.com.
@ 86400 MX 30 alt3.gmail-smtp-in.l.google.com.
@ 86400 MX 40 alt4.gmail-smtp-in.l.google.com.
$ORIGIN l.google.com.
gmail-smtp-in 300 A 142.251.2.26
alt1.gmail-smtp-in 300 A 108.177.104.27
alt2.gmail-smtp-in 300 A 74.125.126.27
alt3.gmail-smtp-in 300 A 172.253.113.26
alt4.gmail-smtp-in 300 A 173.194.77.27
`

func TestResolveMX(t *testing.T) {
	srv := dnstest.Start(t, testZone, gmailZone)
	srv.SetRcode("servfail.test", dns.RcodeServerFailure)
	srv.SetRcode("refused.test", dns.RcodeRefused)
	srv.SetTypeRcode("mx.halfbroken.test", dns.TypeAAAA, dns.RcodeServerFailure)

	tests := []struct {
		domain    string
		hosts     []string
		site      string
		addrs     map[string][]string // host -> addresses
		isMX      bool
		literal   bool
		port      uint16
		wantErr   error // sentinel
		temporary bool
		permanent bool
		rcode     int
	}{
		{domain: "ordered.test", hosts: []string{"a.mx.ordered.test", "b.mx.ordered.test", "c.mx.ordered.test"},
			site: "(a|b|c).mx.ordered.test", isMX: true,
			addrs: map[string][]string{"a.mx.ordered.test": {"192.0.2.1"}, "c.mx.ordered.test": {"192.0.2.3"}}},
		{domain: "gmail.com", isMX: true,
			hosts: []string{"gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com",
				"alt2.gmail-smtp-in.l.google.com", "alt3.gmail-smtp-in.l.google.com", "alt4.gmail-smtp-in.l.google.com"},
			site:  "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com",
			addrs: map[string][]string{"alt4.gmail-smtp-in.l.google.com": {"173.194.77.27"}}},
		{domain: "Ordered.TEST.", hosts: []string{"a.mx.ordered.test", "b.mx.ordered.test", "c.mx.ordered.test"},
			site: "(a|b|c).mx.ordered.test", isMX: true},
		{domain: "implicit4.test", hosts: []string{"implicit4.test"}, site: "implicit4.test",
			addrs: map[string][]string{"implicit4.test": {"192.0.2.10"}}},
		{domain: "implicit6.test", hosts: []string{"implicit6.test"}, site: "implicit6.test",
			addrs: map[string][]string{"implicit6.test": {"2001:db8::10"}}},
		{domain: "dual.test", hosts: []string{"mx.dual.test"}, site: "mx.dual.test", isMX: true,
			addrs: map[string][]string{"mx.dual.test": {"192.0.2.20", "192.0.2.21", "2001:db8::20"}}},
		{domain: "aliased.test", hosts: []string{"alias.aliased.test"}, site: "alias.aliased.test", isMX: true,
			addrs: map[string][]string{"alias.aliased.test": {"192.0.2.20", "192.0.2.21", "2001:db8::20"}}},
		{domain: "halfbroken.test", hosts: []string{"mx.halfbroken.test"}, site: "mx.halfbroken.test", isMX: true,
			addrs: map[string][]string{"mx.halfbroken.test": {"192.0.2.30"}}},
		{domain: "partial.test", hosts: []string{"missing.partial.test", "mx.dual.test"},
			site: "(missing|mx).(partial|dual).test", isMX: true,
			addrs: map[string][]string{"missing.partial.test": nil, "mx.dual.test": {"192.0.2.20", "192.0.2.21", "2001:db8::20"}}},
		{domain: "ported.test:2525", hosts: []string{"mx.dual.test"}, site: "mx.dual.test:2525", isMX: true, port: 2525},
		{domain: "rollup1.test", hosts: nil, site: "(mx1|mx2).provider.test", isMX: true},
		{domain: "rollup2.test", hosts: nil, site: "(mx1|mx2).provider.test", isMX: true},

		{domain: "[127.0.0.1]", hosts: []string{"127.0.0.1"}, site: "127.0.0.1", literal: true,
			addrs: map[string][]string{"127.0.0.1": {"127.0.0.1"}}},
		{domain: "[IPv6:::1]", hosts: []string{"::1"}, site: "::1", literal: true,
			addrs: map[string][]string{"::1": {"::1"}}},
		{domain: "[ipv6:2001:DB8::1]", hosts: []string{"2001:db8::1"}, site: "2001:db8::1", literal: true},
		{domain: "[::1]", hosts: []string{"::1"}, site: "::1", literal: true},
		{domain: "[127.0.0.1]:2525", hosts: []string{"127.0.0.1"}, site: "127.0.0.1:2525", literal: true, port: 2525},
		{domain: "[127.0.0.1:2526]", hosts: []string{"127.0.0.1"}, site: "127.0.0.1:2526", literal: true, port: 2526},
		{domain: "[IPv6:::1]:2525", hosts: []string{"::1"}, site: "[::1]:2525", literal: true, port: 2525},

		{domain: "nullmx.test", wantErr: egress.ErrNullMX, permanent: true, rcode: -1},
		{domain: "mixednull.test", wantErr: egress.ErrNullMX, permanent: true, rcode: -1},
		{domain: "nxdomain.test", wantErr: egress.ErrNXDomain, permanent: true, rcode: dns.RcodeNameError},
		{domain: "servfail.test", temporary: true, rcode: dns.RcodeServerFailure},
		{domain: "refused.test", temporary: true, rcode: dns.RcodeRefused},
		{domain: "noaddr.test", wantErr: egress.ErrNoAddresses, temporary: true, rcode: -1},
		{domain: "a..b", wantErr: egress.ErrInvalidDomain, permanent: true, rcode: -1},
		{domain: "", wantErr: egress.ErrInvalidDomain, permanent: true, rcode: -1},
		{domain: "[300.1.1.1]", wantErr: egress.ErrInvalidDomain, permanent: true, rcode: -1},
		{domain: "[10.0.0.1", wantErr: egress.ErrInvalidDomain, permanent: true, rcode: -1},
		{domain: "[IPv6:10.0.0.1]", wantErr: egress.ErrInvalidDomain, permanent: true, rcode: -1},
		{domain: "[10.0.0.1:25]:26", wantErr: egress.ErrInvalidDomain, permanent: true, rcode: -1},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			r := newResolver(t, srv)
			before := len(srv.QueryLog())
			plan, err := r.ResolveMX(context.Background(), tc.domain)
			if tc.wantErr != nil || tc.temporary || tc.permanent {
				if err == nil {
					t.Fatalf("got plan %+v, want an error", plan)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("error %v is not %v", err, tc.wantErr)
				}
				if egress.IsTemporary(err) != tc.temporary || egress.IsPermanent(err) != tc.permanent {
					t.Errorf("error %v: temporary=%v permanent=%v, want %v %v", err,
						egress.IsTemporary(err), egress.IsPermanent(err), tc.temporary, tc.permanent)
				}
				var de *egress.DNSError
				if !errors.As(err, &de) || de.Rcode != tc.rcode {
					t.Errorf("error %v: want *DNSError with rcode %d", err, tc.rcode)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveMX: %v", err)
			}
			if tc.hosts != nil && !slices.Equal(hostNames(plan), tc.hosts) {
				t.Errorf("hosts %v, want %v", hostNames(plan), tc.hosts)
			}
			if plan.SiteName != tc.site {
				t.Errorf("site %q, want %q", plan.SiteName, tc.site)
			}
			if plan.IsMX != tc.isMX || plan.IsDomainLiteral != tc.literal || plan.Port != tc.port {
				t.Errorf("IsMX %v literal %v port %d, want %v %v %d", plan.IsMX, plan.IsDomainLiteral, plan.Port,
					tc.isMX, tc.literal, tc.port)
			}
			for _, h := range plan.Hosts {
				want, ok := tc.addrs[h.Name]
				if !ok {
					continue
				}
				var got []string
				for _, a := range h.Addrs {
					got = append(got, a.String())
				}
				if !slices.Equal(got, want) {
					t.Errorf("host %s addrs %v, want %v", h.Name, got, want)
				}
				if len(want) == 0 && h.Err == nil {
					t.Errorf("host %s: no addresses but no Err", h.Name)
				}
			}
			if tc.literal {
				if n := len(srv.QueryLog()) - before; n != 0 {
					t.Errorf("literal made %d DNS queries", n)
				}
				if !plan.Expires.IsZero() {
					t.Errorf("literal plan expires %v", plan.Expires)
				}
			} else if plan.Expires.IsZero() {
				t.Error("plan has no expiry")
			}
		})
	}
}

func TestPlanAddrs(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	r := newResolver(t, srv)
	plan, err := r.ResolveMX(context.Background(), "partial.test")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range plan.Addrs() {
		got = append(got, fmt.Sprintf("%s/%d/%s", a.Host, a.Preference, a.Addr))
	}
	want := []string{"mx.dual.test/20/192.0.2.20", "mx.dual.test/20/192.0.2.21", "mx.dual.test/20/2001:db8::20"}
	if !slices.Equal(got, want) {
		t.Errorf("Addrs() = %v, want %v", got, want)
	}
	if !errors.Is(plan.Hosts[0].Err, egress.ErrNXDomain) {
		t.Errorf("unresolvable host Err = %v, want ErrNXDomain", plan.Hosts[0].Err)
	}
}

func TestEqualPreferenceRandomised(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetMX("eq.test", dnstest.MX{Pref: 10, Host: "a.eq.test"}, dnstest.MX{Pref: 10, Host: "b.eq.test"},
		dnstest.MX{Pref: 10, Host: "c.eq.test"}, dnstest.MX{Pref: 20, Host: "z.eq.test"})
	for _, h := range []string{"a", "b", "c", "z"} {
		srv.SetA(h+".eq.test", "192.0.2.1")
	}
	ctx := context.Background()

	t.Run("seeded", func(t *testing.T) {
		sequence := func() []string {
			r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.Rand = rand.New(rand.NewPCG(1, 2)) })
			var seq []string
			for range 20 {
				plan, err := r.ResolveMX(ctx, "eq.test")
				if err != nil {
					t.Fatal(err)
				}
				names := hostNames(plan)
				if names[3] != "z.eq.test" {
					t.Fatalf("lower preference host not last: %v", names)
				}
				if plan.SiteName != "(a|b|c|z).eq.test" {
					t.Fatalf("site %q depends on shuffle", plan.SiteName)
				}
				seq = append(seq, strings.Join(names, ","))
			}
			return seq
		}
		first, second := sequence(), sequence()
		if !slices.Equal(first, second) {
			t.Fatalf("same seed, different orders:\n%v\n%v", first, second)
		}
		if distinct := len(slices.Compact(slices.Sorted(slices.Values(first)))); distinct < 2 {
			t.Fatalf("20 seeded resolutions gave %d distinct orders", distinct)
		}
	})

	t.Run("default source", func(t *testing.T) {
		r := newResolver(t, srv)
		seen := map[string]bool{}
		for i := 0; i < 500 && len(seen) < 6; i++ {
			plan, err := r.ResolveMX(ctx, "eq.test")
			if err != nil {
				t.Fatal(err)
			}
			seen[strings.Join(hostNames(plan)[:3], ",")] = true
		}
		if len(seen) != 6 {
			t.Fatalf("saw %d of 6 orders of three equal-preference hosts: %v", len(seen), seen)
		}
	})
}

func TestTCPFallback(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetMX("tc.test", dnstest.MX{Pref: 10, Host: "mx.tc.test"})
	srv.SetA("mx.tc.test", "192.0.2.1")
	srv.SetTruncate("tc.test", true)
	var many []string
	for i := range 150 {
		many = append(many, fmt.Sprintf("10.1.%d.%d", i/200, i%200+1))
	}
	srv.SetA("big.test", many...)

	r := newResolver(t, srv)
	plan, err := r.ResolveMX(context.Background(), "tc.test")
	if err != nil {
		t.Fatalf("ResolveMX: %v", err)
	}
	if got := hostNames(plan); !slices.Equal(got, []string{"mx.tc.test"}) {
		t.Fatalf("hosts %v", got)
	}
	addrs, err := r.ResolveHost(context.Background(), "big.test")
	if err != nil {
		t.Fatalf("ResolveHost: %v", err)
	}
	if len(addrs) != 150 {
		t.Fatalf("got %d addresses, want 150", len(addrs))
	}
	var nets []string
	for _, q := range srv.QueryLog() {
		if q.Name == "tc.test." || (q.Name == "big.test." && q.Type == dns.TypeA) {
			nets = append(nets, q.Name+q.Net)
		}
	}
	if want := []string{"tc.test.udp", "tc.test.tcp", "big.test.udp", "big.test.tcp"}; !slices.Equal(nets, want) {
		t.Fatalf("queries %v, want %v", nets, want)
	}
}

func TestCacheRespectsTTL(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetDefaultTTL(60)
	srv.SetMX("ttl.test", dnstest.MX{Pref: 10, Host: "mx.ttl.test"})
	srv.SetDefaultTTL(30)
	srv.SetA("mx.ttl.test", "192.0.2.1")
	clk := newClock()
	r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.Now = clk.Now })
	ctx := context.Background()
	resolve := func() *egress.MXPlan {
		t.Helper()
		plan, err := r.ResolveMX(ctx, "ttl.test")
		if err != nil {
			t.Fatal(err)
		}
		return plan
	}
	counts := func(wantMX, wantA int) {
		t.Helper()
		if mx, a := srv.QueriesType("ttl.test", dns.TypeMX), srv.QueriesType("mx.ttl.test", dns.TypeA); mx != wantMX || a != wantA {
			t.Fatalf("MX queries %d, A queries %d; want %d, %d", mx, a, wantMX, wantA)
		}
	}
	plan := resolve()
	if want := clk.Now().Add(30 * time.Second); !plan.Expires.Equal(want) {
		t.Errorf("plan expires %v, want %v (lowest TTL)", plan.Expires, want)
	}
	resolve()
	counts(1, 1)
	clk.Advance(29 * time.Second)
	resolve()
	counts(1, 1)
	clk.Advance(2 * time.Second) // 31s: A expired, MX not
	resolve()
	counts(1, 2)
	clk.Advance(30 * time.Second) // 61s: both expired
	resolve()
	counts(2, 3)
}

func TestTTLClamps(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("zero.test", "192.0.2.1")
	srv.SetTTL("zero.test", 0)
	srv.SetA("long.test", "192.0.2.2")
	srv.SetTTL("long.test", 86400)
	clk := newClock()
	r := newResolver(t, srv, func(o *egress.ResolverOptions) {
		o.Now = clk.Now
		o.MinTTL = 10 * time.Second
		o.MaxTTL = 100 * time.Second
	})
	ctx := context.Background()
	for _, name := range []string{"zero.test", "long.test"} {
		if _, err := r.ResolveHost(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(9 * time.Second)
	_, _ = r.ResolveHost(ctx, "zero.test")
	if n := srv.QueriesType("zero.test", dns.TypeA); n != 1 {
		t.Errorf("TTL 0 with MinTTL 10s: %d queries after 9s, want 1", n)
	}
	clk.Advance(2 * time.Second)
	_, _ = r.ResolveHost(ctx, "zero.test")
	if n := srv.QueriesType("zero.test", dns.TypeA); n != 2 {
		t.Errorf("TTL 0 with MinTTL 10s: %d queries after 11s, want 2", n)
	}
	clk.Advance(90 * time.Second)
	_, _ = r.ResolveHost(ctx, "long.test")
	if n := srv.QueriesType("long.test", dns.TypeA); n != 2 {
		t.Errorf("TTL 86400 with MaxTTL 100s: %d queries after 101s, want 2", n)
	}

	// Without MinTTL a TTL 0 answer is not cached at all.
	r0 := newResolver(t, srv)
	for range 3 {
		_, _ = r0.ResolveHost(ctx, "zero.test")
	}
	if n := srv.QueriesType("zero.test", dns.TypeA); n != 5 {
		t.Errorf("TTL 0: %d queries, want 5", n)
	}
}

func TestNegativeCaching(t *testing.T) {
	ctx := context.Background()
	t.Run("SOA TTL", func(t *testing.T) {
		srv := dnstest.StartOptions(t, dnstest.Options{NegativeTTL: 30})
		clk := newClock()
		r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.Now = clk.Now })
		for range 3 {
			if _, err := r.ResolveMX(ctx, "gone.test"); !errors.Is(err, egress.ErrNXDomain) {
				t.Fatalf("err %v, want NXDOMAIN", err)
			}
		}
		if n := srv.Queries("gone.test"); n != 1 {
			t.Fatalf("%d queries, want 1 (cached NXDOMAIN)", n)
		}
		clk.Advance(31 * time.Second)
		_, _ = r.ResolveMX(ctx, "gone.test")
		if n := srv.Queries("gone.test"); n != 2 {
			t.Fatalf("%d queries after SOA TTL, want 2", n)
		}
	})
	t.Run("capped by NegativeTTL", func(t *testing.T) {
		srv := dnstest.StartOptions(t, dnstest.Options{NegativeTTL: 3600})
		clk := newClock()
		r := newResolver(t, srv, func(o *egress.ResolverOptions) {
			o.Now = clk.Now
			o.NegativeTTL = time.Minute
		})
		_, _ = r.ResolveMX(ctx, "gone.test")
		clk.Advance(61 * time.Second)
		_, _ = r.ResolveMX(ctx, "gone.test")
		if n := srv.Queries("gone.test"); n != 2 {
			t.Fatalf("%d queries, want 2", n)
		}
	})
	t.Run("no SOA and NODATA", func(t *testing.T) {
		srv := dnstest.StartOptions(t, dnstest.Options{NoSOA: true})
		srv.SetA("v4only.test", "192.0.2.1")
		clk := newClock()
		r := newResolver(t, srv, func(o *egress.ResolverOptions) {
			o.Now = clk.Now
			o.NegativeTTL = 20 * time.Second
			o.MaxTTL = time.Hour
		})
		for range 3 {
			if _, err := r.ResolveHost(ctx, "v4only.test"); err != nil {
				t.Fatal(err)
			}
		}
		if n := srv.QueriesType("v4only.test", dns.TypeAAAA); n != 1 {
			t.Fatalf("%d AAAA queries, want 1 (cached NODATA)", n)
		}
		clk.Advance(21 * time.Second)
		_, _ = r.ResolveHost(ctx, "v4only.test")
		if n := srv.QueriesType("v4only.test", dns.TypeAAAA); n != 2 {
			t.Fatalf("%d AAAA queries after NegativeTTL, want 2", n)
		}
		if n := srv.QueriesType("v4only.test", dns.TypeA); n != 1 {
			t.Fatalf("%d A queries, want 1", n)
		}
	})
}

func TestFailureCaching(t *testing.T) {
	ctx := context.Background()
	srv := dnstest.Start(t)
	srv.SetRcode("broken.test", dns.RcodeServerFailure)
	clk := newClock()
	r := newResolver(t, srv, func(o *egress.ResolverOptions) {
		o.Now = clk.Now
		o.FailureTTL = 10 * time.Second
	})
	for range 3 {
		if _, err := r.ResolveMX(ctx, "broken.test"); !egress.IsTemporary(err) {
			t.Fatalf("err %v, want temporary", err)
		}
	}
	if n := srv.Queries("broken.test"); n != 1 {
		t.Fatalf("%d queries, want 1 (failure cached)", n)
	}
	srv.SetRcode("broken.test", dns.RcodeSuccess)
	srv.SetA("broken.test", "192.0.2.1")
	clk.Advance(11 * time.Second)
	if _, err := r.ResolveMX(ctx, "broken.test"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}

	srv.SetRcode("broken2.test", dns.RcodeServerFailure)
	noCache := newResolver(t, srv, func(o *egress.ResolverOptions) { o.FailureTTL = -1 })
	for range 3 {
		_, _ = noCache.ResolveMX(ctx, "broken2.test")
	}
	if n := srv.Queries("broken2.test"); n != 3 {
		t.Fatalf("FailureTTL<0: %d queries, want 3", n)
	}
}

func TestCacheBounded(t *testing.T) {
	srv := dnstest.Start(t)
	for _, n := range []string{"a", "b", "c"} {
		srv.SetA(n+".test", "192.0.2.1")
	}
	// Each ResolveHost caches two answers (A and AAAA).
	r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.CacheSize = 4 })
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "c", "b", "a"} {
		if _, err := r.ResolveHost(ctx, n+".test"); err != nil {
			t.Fatal(err)
		}
	}
	// a was evicted by c, so it was asked again; b and c were not.
	for name, want := range map[string]int{"a.test": 2, "b.test": 1, "c.test": 1} {
		if n := srv.QueriesType(name, dns.TypeA); n != want {
			t.Errorf("%s: %d A queries, want %d", name, n, want)
		}
	}

	off := newResolver(t, srv, func(o *egress.ResolverOptions) { o.CacheSize = -1 })
	for range 2 {
		_, _ = off.ResolveHost(ctx, "b.test")
	}
	if n := srv.QueriesType("b.test", dns.TypeA); n != 3 {
		t.Errorf("cache disabled: %d queries, want 3", n)
	}
}

func TestTimeoutIsTemporary(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetMX("slow.test", dnstest.MX{Pref: 10, Host: "mx.slow.test"})
	srv.SetDelay("slow.test", 10*time.Second)
	r := newResolver(t, srv, func(o *egress.ResolverOptions) {
		o.Timeout = 100 * time.Millisecond
		o.Attempts = 2
	})
	start := time.Now()
	_, err := r.ResolveMX(context.Background(), "slow.test")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	var de *egress.DNSError
	if !errors.As(err, &de) || !de.Temporary || !de.Timeout() || !egress.IsTemporary(err) {
		t.Fatalf("err %v, want a temporary timeout", err)
	}
	if !strings.Contains(err.Error(), "slow.test") {
		t.Errorf("error %q does not name the domain", err)
	}
	if n := srv.Queries("slow.test"); n != 2 {
		t.Errorf("%d queries, want 2 (Attempts)", n)
	}
}

func TestServersInOrder(t *testing.T) {
	bad := dnstest.Start(t)
	bad.SetRcode("example.test", dns.RcodeServerFailure)
	silent := dnstest.Start(t)
	silent.SetDelay("example.test", 10*time.Second)
	good := dnstest.Start(t, "example.test. A 192.0.2.7")
	ctx := context.Background()

	var logs bytes.Buffer
	r, err := egress.NewResolver(egress.ResolverOptions{
		Servers:  []string{bad.Addr(), silent.Addr(), good.Addr()},
		Timeout:  100 * time.Millisecond,
		Attempts: 1,
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := r.ResolveHost(ctx, "example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.7") {
		t.Fatalf("ResolveHost = %v, %v", addrs, err)
	}
	for _, s := range []*dnstest.Server{bad, silent, good} {
		if n := s.QueriesType("example.test", dns.TypeA); n != 1 {
			t.Errorf("%s: %d A queries, want 1", s.Addr(), n)
		}
	}
	if !strings.Contains(logs.String(), "rcode=SERVFAIL") || !strings.Contains(logs.String(), silent.Addr()) {
		t.Errorf("failed exchanges not logged:\n%s", logs.String())
	}

	// All failing: every server is asked Attempts times, the last error is
	// reported.
	r2, err := egress.NewResolver(egress.ResolverOptions{
		Servers: []string{bad.Addr(), bad.Addr()}, Attempts: 3, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	bad.ResetQueries()
	_, err = r2.ResolveMX(ctx, "example.test")
	var de *egress.DNSError
	if !errors.As(err, &de) || de.Rcode != dns.RcodeServerFailure || de.Server != bad.Addr() || !de.Temporary {
		t.Fatalf("err %v, want SERVFAIL from %s", err, bad.Addr())
	}
	if n := bad.Queries("example.test"); n != 6 {
		t.Errorf("%d queries, want 6", n)
	}
}

func TestConcurrentLookupsDeduplicated(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetMX("busy.test", dnstest.MX{Pref: 10, Host: "mx.busy.test"})
	srv.SetA("mx.busy.test", "192.0.2.1")
	srv.SetDelay("busy.test", 200*time.Millisecond)
	r := newResolver(t, srv)

	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			plan, err := r.ResolveMX(context.Background(), "busy.test")
			if err == nil && plan.SiteName != "mx.busy.test" {
				err = fmt.Errorf("site %q", plan.SiteName)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q := srv.QueriesType("busy.test", dns.TypeMX); q != 1 {
		t.Errorf("%d MX queries for %d concurrent lookups, want 1", q, n)
	}
	if q := srv.QueriesType("mx.busy.test", dns.TypeA); q != 1 {
		t.Errorf("%d A queries, want 1", q)
	}
}

func TestContextCancel(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetMX("hang.test", dnstest.MX{Pref: 10, Host: "mx.hang.test"})
	srv.SetA("mx.hang.test", "192.0.2.1")
	srv.SetDelay("hang.test", 30*time.Second)
	r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.Timeout = 20 * time.Second })

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := r.ResolveMX(ctx, "hang.test")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("returned after %v", d)
		}
		if !errors.Is(err, context.Canceled) || !egress.IsTemporary(err) {
			t.Fatalf("err %v, want temporary context.Canceled", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := r.ResolveMX(ctx, "hang.test")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want DeadlineExceeded", err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		before := srv.Queries("other.test")
		if _, err := r.ResolveHost(ctx, "other.test"); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
		if srv.Queries("other.test") != before {
			t.Error("a cancelled context still sent a query")
		}
	})
	t.Run("one waiter gives up, the other gets the answer", func(t *testing.T) {
		srv.SetDelay("hang.test", 300*time.Millisecond)
		srv.ResetQueries()
		r := newResolver(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		quitter := make(chan error, 1)
		go func() {
			_, err := r.ResolveMX(ctx, "hang.test")
			quitter <- err
		}()
		for i := 0; i < 200 && srv.Queries("hang.test") == 0; i++ {
			time.Sleep(5 * time.Millisecond)
		}
		stayer := make(chan error, 1)
		go func() {
			_, err := r.ResolveMX(context.Background(), "hang.test")
			stayer <- err
		}()
		time.Sleep(20 * time.Millisecond)
		cancel()
		if err := <-quitter; !errors.Is(err, context.Canceled) {
			t.Errorf("quitter: %v", err)
		}
		if err := <-stayer; err != nil {
			t.Errorf("stayer: %v", err)
		}
		if n := srv.QueriesType("hang.test", dns.TypeMX); n != 1 {
			t.Errorf("%d MX queries, want 1 shared", n)
		}
	})
	t.Run("cancellation is not cached", func(t *testing.T) {
		srv.SetDelay("hang.test", 30*time.Second)
		r := newResolver(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := r.ResolveMX(ctx, "hang.test"); err == nil {
			t.Fatal("expected an error")
		}
		srv.SetDelay("hang.test", 0)
		if _, err := r.ResolveMX(context.Background(), "hang.test"); err != nil {
			t.Fatalf("after cancellation: %v", err)
		}
	})
}

func TestResolveHost(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("both.test", "192.0.2.1")
	srv.SetAAAA("both.test", "2001:db8::1")
	srv.SetTXT("txtonly.test", "hello")
	srv.SetRcode("fail.test", dns.RcodeServerFailure)
	srv.SetCNAME("alias.test", "both.test")
	srv.SetCNAME("txtalias.test", "txtonly.test")
	srv.SetCNAME("loop1.test", "loop2.test")
	srv.SetCNAME("loop2.test", "loop1.test")
	r := newResolver(t, srv)
	tests := []struct {
		host      string
		want      []string
		wantErr   error
		temporary bool
	}{
		{host: "10.0.0.1", want: []string{"10.0.0.1"}},
		{host: "::1", want: []string{"::1"}},
		{host: "[10.0.0.1]", want: []string{"10.0.0.1"}},
		{host: "[IPv6:2001:db8::5]", want: []string{"2001:db8::5"}},
		{host: " Both.Test. ", want: []string{"192.0.2.1", "2001:db8::1"}},
		{host: "alias.test", want: []string{"192.0.2.1", "2001:db8::1"}},
		{host: "missing.test", wantErr: egress.ErrNXDomain},
		{host: "txtalias.test", wantErr: egress.ErrNoAddresses, temporary: true},
		{host: "loop1.test", temporary: true},
		{host: "txtonly.test", wantErr: egress.ErrNoAddresses, temporary: true},
		{host: "fail.test", temporary: true},
		{host: "[10.0.0.1:25]", wantErr: egress.ErrInvalidDomain},
		{host: "[bogus]", wantErr: egress.ErrInvalidDomain},
		{host: "", wantErr: egress.ErrInvalidDomain},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			addrs, err := r.ResolveHost(context.Background(), tc.host)
			if tc.want != nil {
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, a := range addrs {
					got = append(got, a.String())
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %v, want an error", addrs)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			if egress.IsTemporary(err) != tc.temporary || egress.IsPermanent(err) == tc.temporary {
				t.Errorf("err %v: temporary=%v, want %v", err, egress.IsTemporary(err), tc.temporary)
			}
		})
	}
}

func TestResolvConfAndServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("# test\nnameserver 127.0.0.1\nnameserver ::1\noptions timeout:1 attempts:3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := egress.NewResolver(egress.ResolverOptions{ResolvConf: conf})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Servers(), []string{"127.0.0.1:53", "[::1]:53"}; !slices.Equal(got, want) {
		t.Errorf("servers from resolv.conf %v, want %v", got, want)
	}

	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{empty, filepath.Join(dir, "missing.conf")} {
		if _, err := egress.NewResolver(egress.ResolverOptions{ResolvConf: path}); err == nil {
			t.Errorf("%s: expected an error", path)
		}
	}

	r, err = egress.NewResolver(egress.ResolverOptions{Servers: []string{"127.0.0.1", "::1", "[::1]:5353", "localhost:5353", "dns.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Servers(), []string{"127.0.0.1:53", "[::1]:53", "[::1]:5353", "localhost:5353", "dns.test:53"}; !slices.Equal(got, want) {
		t.Errorf("servers %v, want %v", got, want)
	}
	for _, bad := range []string{"127.0.0.1:99999", ":53", "", "a:b:c:"} {
		if _, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{bad}}); err == nil {
			t.Errorf("server %q: expected an error", bad)
		}
	}
}

func BenchmarkResolveMXCached(b *testing.B) {
	srv := dnstest.Start(b, gmailZone)
	r := newResolver(b, srv)
	ctx := context.Background()
	if _, err := r.ResolveMX(ctx, "gmail.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.ResolveMX(ctx, "gmail.com"); err != nil {
			b.Fatal(err)
		}
	}
}
