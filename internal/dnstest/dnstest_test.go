package dnstest_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mtakit/mtakit/internal/dnstest"
)

func ask(t *testing.T, srv *dnstest.Server, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, srv.Addr())
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestAnswers(t *testing.T) {
	srv := dnstest.Start(t, `
$ORIGIN example.com.
@        600 IN MX 10 mx1
@        600 IN MX 20 mx2.example.net.
mx1      IN A 192.0.2.1
www      IN CNAME mx1
deep.sub IN TXT "x"
`)
	srv.SetAAAA("mx1.example.com", "2001:db8::1")
	srv.SetTXT("Example.COM.", "v=spf1 -all")
	srv.SetCNAME("alias.example.com", "www.example.com")

	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
		soa     bool
	}{
		{"example.com", dns.TypeMX, dns.RcodeSuccess, 2, false},
		{"EXAMPLE.com", dns.TypeTXT, dns.RcodeSuccess, 1, false},
		{"mx1.example.com", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"mx1.example.com", dns.TypeAAAA, dns.RcodeSuccess, 1, false},
		{"www.example.com", dns.TypeA, dns.RcodeSuccess, 2, false}, // CNAME + A
		{"www.example.com", dns.TypeCNAME, dns.RcodeSuccess, 1, false},
		{"alias.example.com", dns.TypeA, dns.RcodeSuccess, 3, false}, // CNAME, CNAME, A
		{"alias.example.com", dns.TypeMX, dns.RcodeSuccess, 2, true}, // CNAMEs, NODATA
		{"example.com", dns.TypeA, dns.RcodeSuccess, 0, true},        // NODATA
		{"sub.example.com", dns.TypeA, dns.RcodeSuccess, 0, true},    // empty non-terminal
		{"nope.example.com", dns.TypeA, dns.RcodeNameError, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			r := ask(t, srv, "udp", tc.name, tc.qtype, true)
			if r.Rcode != tc.rcode || len(r.Answer) != tc.answers {
				t.Fatalf("rcode %s answers %d, want %s %d:\n%v", dns.RcodeToString[r.Rcode], len(r.Answer),
					dns.RcodeToString[tc.rcode], tc.answers, r)
			}
			if !r.Authoritative {
				t.Error("AA not set")
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tc.soa {
				t.Errorf("SOA in authority = %v, want %v", hasSOA, tc.soa)
			}
		})
	}
	if got := srv.Queries("example.com"); got != 3 { // MX, TXT, A
		t.Errorf("Queries(example.com) = %d, want 3", got)
	}
	if got := srv.QueriesType("mx1.example.com.", dns.TypeAAAA); got != 1 {
		t.Errorf("QueriesType(mx1, AAAA) = %d, want 1", got)
	}
}

func TestTTLs(t *testing.T) {
	srv := dnstest.StartOptions(t, dnstest.Options{TTL: 42, NegativeTTL: 7})
	srv.SetA("a.test", "192.0.2.1")
	if ttl := ask(t, srv, "udp", "a.test", dns.TypeA, false).Answer[0].Header().Ttl; ttl != 42 {
		t.Errorf("default TTL %d, want 42", ttl)
	}
	srv.SetTTL("a.test", 5)
	if ttl := ask(t, srv, "udp", "a.test", dns.TypeA, false).Answer[0].Header().Ttl; ttl != 5 {
		t.Errorf("override TTL %d, want 5", ttl)
	}
	srv.ClearTTL("a.test")
	srv.SetDefaultTTL(9)
	srv.SetA("b.test", "192.0.2.2")
	if ttl := ask(t, srv, "udp", "b.test", dns.TypeA, false).Answer[0].Header().Ttl; ttl != 9 {
		t.Errorf("TTL after SetDefaultTTL %d, want 9", ttl)
	}
	r := ask(t, srv, "udp", "missing.test", dns.TypeA, false)
	soa := r.Ns[0].(*dns.SOA)
	if soa.Hdr.Ttl != 7 || soa.Minttl != 7 {
		t.Errorf("negative SOA TTL %d minimum %d, want 7", soa.Hdr.Ttl, soa.Minttl)
	}

	srv.SetNegativeTTL(3)
	if soa := ask(t, srv, "udp", "missing.test", dns.TypeA, false).Ns[0].(*dns.SOA); soa.Minttl != 3 {
		t.Errorf("after SetNegativeTTL: minimum %d, want 3", soa.Minttl)
	}

	noSOA := dnstest.StartOptions(t, dnstest.Options{NoSOA: true})
	if r := ask(t, noSOA, "udp", "missing.test", dns.TypeA, false); len(r.Ns) != 0 || r.Rcode != dns.RcodeNameError {
		t.Errorf("NoSOA answer: %v", r)
	}
}

func TestNullMXAndDelete(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetNullMX("null.test")
	r := ask(t, srv, "udp", "null.test", dns.TypeMX, false)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "." || r.Answer[0].(*dns.MX).Preference != 0 {
		t.Fatalf("null MX answer: %v", r)
	}
	srv.Delete("null.test", dns.TypeMX)
	if r := ask(t, srv, "udp", "null.test", dns.TypeMX, false); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after Delete: %v", r)
	}
	srv.SetA("x.test", "192.0.2.1")
	srv.SetA("x.test") // no addresses deletes
	if r := ask(t, srv, "udp", "x.test", dns.TypeA, false); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after SetA(): %v", r)
	}
}

func TestRcodes(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("fail.test", "192.0.2.1")
	srv.SetRcode("fail.test", dns.RcodeServerFailure)
	srv.SetTypeRcode("fail.test", dns.TypeAAAA, dns.RcodeRefused)
	if r := ask(t, srv, "udp", "fail.test", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Errorf("A: %v", r)
	}
	if r := ask(t, srv, "udp", "fail.test", dns.TypeAAAA, false); r.Rcode != dns.RcodeRefused {
		t.Errorf("AAAA: %v", r)
	}
	srv.SetRcode("fail.test", dns.RcodeSuccess)
	if r := ask(t, srv, "udp", "fail.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("A after clearing: %v", r)
	}
}

func TestTruncation(t *testing.T) {
	srv := dnstest.Start(t)
	srv.SetA("forced.test", "192.0.2.1")
	srv.SetTruncate("forced.test", true)
	r := ask(t, srv, "udp", "forced.test", dns.TypeA, true)
	if !r.Truncated || len(r.Answer) != 0 {
		t.Fatalf("forced UDP answer not truncated: %v", r)
	}
	if r := ask(t, srv, "tcp", "forced.test", dns.TypeA, true); r.Truncated || len(r.Answer) != 1 {
		t.Fatalf("TCP answer: %v", r)
	}

	// A large answer is truncated naturally to the client's buffer size.
	var ips []string
	for i := range 200 {
		ips = append(ips, fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))
	}
	srv.SetA("big.test", ips...)
	wireLen := func(m *dns.Msg) int { m.Compress = true; return m.Len() }
	if r := ask(t, srv, "udp", "big.test", dns.TypeA, false); !r.Truncated || wireLen(r) > 512 {
		t.Fatalf("no EDNS0: truncated=%v len=%d", r.Truncated, wireLen(r))
	}
	if r := ask(t, srv, "udp", "big.test", dns.TypeA, true); !r.Truncated || wireLen(r) > 1232 {
		t.Fatalf("EDNS0 1232: truncated=%v len=%d", r.Truncated, wireLen(r))
	}
	if r := ask(t, srv, "tcp", "big.test", dns.TypeA, true); r.Truncated || len(r.Answer) != 200 {
		t.Fatalf("TCP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
	var nets []string
	for _, q := range srv.QueryLog() {
		if q.Name == "big.test." {
			nets = append(nets, q.Net)
		}
	}
	if strings.Join(nets, ",") != "udp,udp,tcp" {
		t.Errorf("query log nets %v", nets)
	}
	srv.ResetQueries()
	if n := len(srv.QueryLog()); n != 0 {
		t.Errorf("after ResetQueries: %d queries", n)
	}
}

func TestDelayAndClose(t *testing.T) {
	srv, err := dnstest.New(dnstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetA("slow.test", "192.0.2.1")
	srv.SetDelay("slow.test", 150*time.Millisecond)
	m := new(dns.Msg)
	m.SetQuestion("slow.test.", dns.TypeA)
	start := time.Now()
	if _, _, err := (&dns.Client{Timeout: 50 * time.Millisecond}).Exchange(m, srv.Addr()); err == nil {
		t.Fatal("expected a timeout")
	}
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, srv.Addr())
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("slow answer: %v %v", r, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("answered after %v, want >= 150ms", d)
	}

	// Close releases queries that are being held.
	srv.SetDelay("slow.test", time.Hour)
	go func() { _, _, _ = (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, srv.Addr()) }()
	for range 100 {
		if srv.Queries("slow.test") == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a delayed query")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	srv := dnstest.Start(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("h%d.test", i)
			for j := range 20 {
				srv.SetA(name, fmt.Sprintf("192.0.2.%d", j+1))
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn(name), dns.TypeA)
				r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, srv.Addr())
				if err != nil || len(r.Answer) != 1 {
					t.Errorf("%s: %v %v", name, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(srv.QueryLog()); n != 160 {
		t.Errorf("%d queries logged, want 160", n)
	}
}

func TestLoadZoneError(t *testing.T) {
	srv := dnstest.Start(t)
	if err := srv.LoadZone("bad. IN MX notanumber x."); err == nil {
		t.Fatal("expected a parse error")
	}
}

func TestSecureZones(t *testing.T) {
	srv := dnstest.Start(t, `
signed.test.          MX 10 mx.signed.test.
mx.signed.test.       A 127.0.0.1
out.signed.test.      CNAME host.unsigned.test.
host.unsigned.test.   A 127.0.0.2
_25._tcp.mx.signed.test. TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`)
	srv.SetSecure("signed.test", true)
	query := func(name string, qtype uint16, ad, do bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		m.AuthenticatedData = ad
		m.SetEdns0(1232, do)
		r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		qtype  uint16
		ad, do bool
		want   bool
	}{
		{"signed.test", dns.TypeMX, true, false, true},
		{"signed.test", dns.TypeMX, false, true, true},
		{"signed.test", dns.TypeMX, false, false, false}, // not asked for
		{"_25._tcp.mx.signed.test", dns.TypeTLSA, true, false, true},
		{"missing.signed.test", dns.TypeA, true, false, true}, // secure denial
		{"out.signed.test", dns.TypeA, true, false, false},    // CNAME into an unsigned zone
		{"host.unsigned.test", dns.TypeA, true, false, false},
	} {
		r := query(tc.name, tc.qtype, tc.ad, tc.do)
		if r.AuthenticatedData != tc.want {
			t.Errorf("%s %s (AD=%v DO=%v): AD %v, want %v", tc.name, dns.TypeToString[tc.qtype], tc.ad, tc.do, r.AuthenticatedData, tc.want)
		}
	}
	if r := query("_25._tcp.mx.signed.test", dns.TypeTLSA, true, false); len(r.Answer) != 1 {
		t.Errorf("TLSA answer %v", r.Answer)
	}
	srv.SetSecure("signed.test", false)
	if r := query("signed.test", dns.TypeMX, true, false); r.AuthenticatedData {
		t.Error("AD after SetSecure(false)")
	}
}
