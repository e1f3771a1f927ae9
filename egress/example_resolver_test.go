package egress_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/dnstest"
)

func ExampleResolver_ResolveMX() {
	// An in-process DNS server stands in for the recursive resolver.
	srv, err := dnstest.New(dnstest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	if err := srv.LoadZone(`
example.com.        MX 10 mx1.example.com.
example.com.        MX 20 mx2.example.com.
mx1.example.com.    A  192.0.2.1
mx2.example.com.    A  192.0.2.2
mx2.example.com.    AAAA 2001:db8::2
`); err != nil {
		log.Fatal(err)
	}
	srv.SetNullMX("nomail.example")

	r, err := egress.NewResolver(egress.ResolverOptions{
		Servers: []string{srv.Addr()},
		Timeout: time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	plan, err := r.ResolveMX(ctx, "example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("site:", plan.SiteName)
	for _, a := range plan.Addrs() {
		fmt.Println(a.Preference, a.Host, a.Addr)
	}

	_, err = r.ResolveMX(ctx, "nomail.example")
	fmt.Println("null MX:", errors.Is(err, egress.ErrNullMX), "permanent:", egress.IsPermanent(err))

	plan, _ = r.ResolveMX(ctx, "[IPv6:::1]:2525")
	fmt.Println("literal:", plan.SiteName, plan.Port)
	// Output:
	// site: (mx1|mx2).example.com
	// 10 mx1.example.com 192.0.2.1
	// 20 mx2.example.com 192.0.2.2
	// 20 mx2.example.com 2001:db8::2
	// null MX: true permanent: true
	// literal: [::1]:2525 2525
}

func ExampleSiteName() {
	fmt.Println(egress.SiteName([]string{
		"gmail-smtp-in.l.google.com.",
		"alt1.gmail-smtp-in.l.google.com.",
		"alt2.gmail-smtp-in.l.google.com.",
		"alt3.gmail-smtp-in.l.google.com.",
		"alt4.gmail-smtp-in.l.google.com.",
	}))
	fmt.Println(egress.SiteName([]string{"mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net", "mta7.am0.yahoodns.net"}))
	fmt.Println(egress.MXListSiteName([]string{"smart.host.local", "[10.0.0.1]:2025"}))
	// Output:
	// (alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com
	// (mta5|mta6|mta7).am0.yahoodns.net
	// mx_list:smart.host.local,[10.0.0.1]:2025
}
