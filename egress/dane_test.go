package egress_test

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/miekg/dns"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/shaping"
)

// TestDANE delivers to a host whose certificate comes from a CA the client
// does not trust, so that only DANE can authenticate it, under TLSA
// records served by the in-process DNS server with the AD bit.
func TestDANE(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.issue(false, "mx.example.test")
	sink := startSink(t, smtpsink.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{leaf}}, Store: true})
	clearSink := startSink(t, smtpsink.Options{Store: true})
	spki := sha256.Sum256(leaf.Leaf.RawSubjectPublicKeyInfo)
	full := sha512.Sum512(leaf.Leaf.Raw)
	caHash := sha256.Sum256(ca.cert.Raw)
	other := sha256.Sum256([]byte("some other key"))
	ee := "3 1 1 " + hex.EncodeToString(spki[:])

	srv := dnstest.Start(t, `
example.test.     MX 10 mx.example.test.
mx.example.test.  A  127.0.0.1
`)
	cases := []struct {
		name      string
		tlsa      []string // records at _port._tcp.mx.example.test
		insecure  bool     // the zone is not signed
		untrusted bool     // the resolver's AD bit is not trusted
		servfail  bool
		clear     bool // deliver to a host without STARTTLS
		mode      shaping.TLSMode
		wantDANE  string
		wantAuth  bool // TLS authenticated by DANE
		wantFail  string
	}{
		{name: "DANE-EE SPKI SHA-256 matches", tlsa: []string{ee}, mode: shaping.Disabled, wantDANE: egress.DANEOK, wantAuth: true},
		{name: "DANE-EE full certificate SHA-512", tlsa: []string{"3 0 2 " + hex.EncodeToString(full[:])}, wantDANE: egress.DANEOK, wantAuth: true},
		{name: "DANE-EE one of several matches", tlsa: []string{"3 1 1 " + hex.EncodeToString(other[:]), ee}, wantDANE: egress.DANEOK, wantAuth: true},
		{name: "DANE-EE mismatch blocks delivery", tlsa: []string{"3 1 1 " + hex.EncodeToString(other[:])},
			mode: shaping.OpportunisticInsecure, wantFail: "DANE: no TLSA record matches the peer certificate"},
		{name: "DANE-TA matches the issuer", tlsa: []string{"2 0 1 " + hex.EncodeToString(caHash[:])}, wantDANE: egress.DANEOK, wantAuth: true},
		{name: "DANE-TA mismatch", tlsa: []string{"2 0 1 " + hex.EncodeToString(other[:])}, wantFail: "DANE: no TLSA record matches"},
		{name: "DANE records require STARTTLS", tlsa: []string{ee}, clear: true, mode: shaping.Opportunistic,
			wantFail: "tls policy is Required but STARTTLS is not advertised"},
		{name: "unusable records: RequiredInsecure", tlsa: []string{"1 1 1 " + hex.EncodeToString(spki[:])},
			mode: shaping.Disabled, wantDANE: egress.DANEUnusable},
		{name: "unusable records refuse clear text", tlsa: []string{"0 1 1 " + hex.EncodeToString(spki[:])}, clear: true,
			wantFail: "tls policy is RequiredInsecure but STARTTLS is not advertised"},
		{name: "no TLSA: configured mode", mode: shaping.OpportunisticInsecure, wantDANE: egress.DANENotApplicable},
		{name: "unsigned zone: DANE does not apply", tlsa: []string{"3 1 1 " + hex.EncodeToString(other[:])}, insecure: true,
			mode: shaping.OpportunisticInsecure, wantDANE: egress.DANEInsecureChain},
		{name: "untrusted resolver: DANE does not apply", tlsa: []string{"3 1 1 " + hex.EncodeToString(other[:])}, untrusted: true,
			mode: shaping.OpportunisticInsecure, wantDANE: egress.DANEInsecureChain},
		{name: "TLSA lookup failure defers", tlsa: []string{ee}, servfail: true, mode: shaping.OpportunisticInsecure,
			wantFail: "DANE TLSA lookup for mx.example.test could not be securely resolved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := sink
			if tc.clear {
				target = clearSink
			}
			_, port := sinkAddr(t, target)
			name := fmt.Sprintf("_%d._tcp.mx.example.test", port)
			srv.Delete(name)
			srv.SetRcode(name, dns.RcodeSuccess)
			for _, r := range tc.tlsa {
				if err := srv.LoadZone(name + ". TLSA " + r); err != nil {
					t.Fatal(err)
				}
			}
			if tc.servfail {
				srv.SetRcode(name, dns.RcodeServerFailure)
			}
			srv.SetSecure("example.test", !tc.insecure)
			r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.CacheSize, o.TrustAD = -1, !tc.untrusted })
			plan := resolveMX(t, r, "example.test")
			if plan.Secure == (tc.insecure || tc.untrusted) || plan.Hosts[0].Secure == (tc.insecure || tc.untrusted) {
				t.Fatalf("plan secure %v, host secure %v", plan.Secure, plan.Hosts[0].Secure)
			}
			opts := egress.DialOptions{Hosts: plan.Hosts, Port: port, Config: loopbackConfig(), Hostname: "mta.test",
				MXSecure: plan.Secure, DANE: r}
			opts.Config.EnableDANE = true
			opts.Config.EnableTLS = tc.mode
			if tc.wantFail != "" {
				wantDialFailure(t, opts, tc.wantFail)
				return
			}
			c, resp := deliverOne(t, opts)
			wantCode(t, "delivery", resp, 250, "2.0.0")
			info := c.Info()
			if info.DANE != tc.wantDANE {
				t.Errorf("ConnInfo.DANE %q, want %q", info.DANE, tc.wantDANE)
			}
			if info.TLS == nil {
				t.Fatal("delivered without TLS")
			}
			if info.TLS.DANE != tc.wantAuth || info.TLS.Verified != tc.wantAuth {
				t.Errorf("TLS %+v, want DANE-authenticated %v", info.TLS, tc.wantAuth)
			}
		})
	}
	// enable_dane=false ignores the records.
	srv.SetSecure("example.test", true)
	r := newResolver(t, srv, func(o *egress.ResolverOptions) { o.TrustAD = true })
	plan := resolveMX(t, r, "example.test")
	_, port := sinkAddr(t, sink)
	opts := egress.DialOptions{Hosts: plan.Hosts, Port: port, Config: loopbackConfig(), Hostname: "mta.test", MXSecure: true, DANE: r}
	opts.Config.EnableTLS = shaping.OpportunisticInsecure
	if c, _ := deliverOne(t, opts); c.Info().DANE != "" || c.Info().TLS.DANE {
		t.Errorf("DANE applied while disabled: %+v", c.Info())
	}
}

func resolveMX(t *testing.T, r *egress.Resolver, domain string) *egress.MXPlan {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	plan, err := r.ResolveMX(ctx, domain)
	if err != nil {
		t.Fatalf("ResolveMX(%s): %v", domain, err)
	}
	return plan
}
