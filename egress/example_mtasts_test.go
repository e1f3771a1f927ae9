package egress_test

import (
	"fmt"

	"github.com/mtakit/mtakit/egress"
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
