package egress_test

import (
	"fmt"
	"strings"

	"github.com/mtakit/mtakit/egress"
)

// Sources and pools from a sources.toml in KumoMTA's policy-extras
// format (LoadSources reads files; ParseSources a document). The pools
// go to mta.Options.EgressPools via EgressPools.
func ExampleParseSources() {
	srcs, err := egress.ParseSources("sources.toml", []byte(`
[source."ip-1"]
source_address = "10.0.0.1"
ehlo_domain = "mta1.example.com"

[source."ip-2"]
source_address = "10.0.0.2"
ehlo_domain = "mta2.example.com"

# ip-2 is warming up: one message in four
[pool."shared"]
[pool."shared"."ip-1"]
weight = 3
[pool."shared"."ip-2"]
weight = 1
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(srcs.Sources["ip-2"].SourceAddress(), srcs.Sources["ip-2"].EHLODomain())
	pool := srcs.Pools["shared"]
	var picks []string
	for range 8 {
		// One cursor per scheduled queue: each queue is spread by weight.
		picks = append(picks, pool.NextFor("acme@example.com").Name())
	}
	fmt.Println(strings.Join(picks, " "))

	// Mistakes are reported with the file and line.
	_, err = egress.ParseSources("sources.toml", []byte(`
[source."ip-1"]
source_address = "10.0.0.1"

[pool."shared"."ip-1"]
[pool."shared"."ip-9"]
`))
	fmt.Println(err)
	// Output:
	// 10.0.0.2 mta2.example.com
	// ip-1 ip-1 ip-2 ip-1 ip-1 ip-1 ip-2 ip-1
	// sources.toml:6: pool 'shared' references source 'ip-9' which is not defined
}
