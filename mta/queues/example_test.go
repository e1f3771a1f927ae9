package queues_test

import (
	"fmt"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/queues"
)

// A queues.toml in KumoMTA's policy-extras format (Load reads files; Parse
// a document), installed as mta.Policy hooks.
func ExampleParse() {
	cfg, err := queues.Parse("queues.toml", []byte(`
tenant_header = "X-Tenant"
remove_tenant_header = true
default_tenant = "default"

[tenant.default]
egress_pool = "shared"

[tenant.acme]
egress_pool = "acme-ips"
max_age = "10 hours"

[queue.default]
max_age = "1 day"

[queue."gmail.com"]
retry_interval = "17 mins"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	qc := cfg.Resolve("gmail.com", "acme", "").QueueConfig()
	fmt.Println(qc.EgressPool, qc.MaxAge, qc.RetryInterval)

	h := queues.NewHelper(cfg)
	opts := mta.Options{Policy: h.Policy(mta.Policy{})}
	qc, _ = opts.Policy.QueueConfig("default@example.com", "", "default", "example.com", "")
	fmt.Println(qc.EgressPool, qc.MaxAge)

	_, err = queues.Parse("queues.toml", []byte("[tenant.acme]\negress_pol = \"x\"\n"))
	fmt.Println(err)
	// Output:
	// acme-ips 10h0m0s 17m0s
	// shared 24h0m0s
	// queues.toml:2: unknown key tenant.acme.egress_pol
}
