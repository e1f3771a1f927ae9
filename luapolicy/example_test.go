package luapolicy_test

import (
	"context"
	"fmt"
	"log"

	"github.com/mtakit/mtakit/luapolicy"
)

// A policy's lookups used from Go: the listener domain decides relaying,
// get_queue_config configures each tenant's queue.
func Example() {
	p, err := luapolicy.LoadString("init.lua", `
local kumo = require 'kumo'
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'example.com' then
    return kumo.make_listener_domain { relay_to = true }
  end
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if tenant == 'bulk' then
    return kumo.make_queue_config { retry_interval = '30 minutes', max_age = '1 day', egress_pool = 'bulk-ips' }
  end
end)
`, luapolicy.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	d, _ := p.DomainLookup().LookupListenerDomain(context.Background(), "example.com", "127.0.0.1:25")
	fmt.Println("relay to example.com:", d.RelayTo)
	other, _ := p.DomainLookup().LookupListenerDomain(context.Background(), "example.net", "127.0.0.1:25")
	fmt.Println("example.net is a listener domain:", other != nil)

	qc, _ := p.MTAPolicy().QueueConfig("bulk@example.net", "", "bulk", "example.net", "")
	fmt.Println("bulk queue:", qc.RetryInterval, qc.MaxAge, qc.EgressPool)
	// Output:
	// relay to example.com: true
	// example.net is a listener domain: false
	// bulk queue: 30m0s 24h0m0s bulk-ips
}
