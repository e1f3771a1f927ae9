package egress_test

import (
	"context"
	"fmt"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/shaping"
)

// An MTA-STS policy as served at
// https://mta-sts.example.com/.well-known/mta-sts.txt, and which MX hosts
// it permits.
func ExampleParseMTASTSPolicy() {
	p, err := egress.ParseMTASTSPolicy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Mode, p.MaxAge)
	for _, host := range []string{"mail.example.com", "mx1.example.net", "a.b.example.net", "backup.example.org"} {
		fmt.Println(host, p.Permits(host))
	}
	// Output:
	// enforce 168h0m0s
	// mail.example.com true
	// mx1.example.net true
	// a.b.example.net false
	// backup.example.org false
}

// Transport security for a destination resolved from DNS: MTA-STS from
// the domain's policy, DANE from TLSA records validated by a trusted
// local resolver, and broken TLS remembered per site. (Not run: it needs
// a resolver and the Internet.)
func Example_transportSecurity() {
	ctx := context.Background()
	r, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{"127.0.0.1:53"}, TrustAD: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	sts, err := egress.NewMTASTS(egress.MTASTSOptions{Resolver: r})
	if err != nil {
		fmt.Println(err)
		return
	}
	broken := egress.NewBrokenTLS(nil)

	plan, err := r.ResolveMX(ctx, "example.com")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := shaping.Default() // enable_mta_sts is on by default
	cfg.EnableDANE = true
	cfg.RememberBrokenTLS = 3 * 24 * time.Hour
	conn, err := egress.Dial(ctx, egress.DialOptions{
		Hosts:     plan.Hosts,
		Port:      int(plan.Port),
		Config:    cfg,
		Domain:    plan.Domain,
		MTASTS:    sts,
		DANE:      r,
		MXSecure:  plan.Secure,
		BrokenTLS: broken,
		Site:      plan.SiteName,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	info := conn.Info()
	fmt.Println(info.MTASTS, info.DANE, info.TLS != nil && info.TLS.Verified)
}
