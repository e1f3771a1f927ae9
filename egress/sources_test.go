package egress

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The KumoMTA example sources.toml: a copy in testdata keeps the test
// hermetic; the project's shared fixture is checked too when present.
var kumoSourcesFixtures = []string{
	"testdata/kumomta_sources.toml",
	"../../shared/fixtures/kumomta/sources.toml",
}

func TestLoadSourcesKumoFixture(t *testing.T) {
	for _, path := range kumoSourcesFixtures {
		if _, err := os.Stat(path); err != nil && path != kumoSourcesFixtures[0] {
			t.Logf("skipping %s: %v", path, err)
			continue
		}
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) {
			s, err := LoadSources(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Sources) != 3 || len(s.Pools) != 2 {
				t.Fatalf("%d sources, %d pools", len(s.Sources), len(s.Pools))
			}
			ip2 := s.Sources["ip-2"]
			if ip2.SourceAddress() != netip.MustParseAddr("10.0.0.2") || ip2.EHLODomain() != "mta2.examplecorp.com" ||
				ip2.Options().TTL != DefaultSourceTTL {
				t.Errorf("ip-2 = %+v", ip2.Options())
			}
			p1 := s.Pools["pool-1"].Entries()
			if len(p1) != 1 || p1[0].Source.Name() != "ip-1" || p1[0].Weight != 1 {
				t.Errorf("pool-1 = %+v", p1)
			}
			p2 := s.Pools["pool-2"]
			var got string
			for range 6 {
				got += p2.Next().Name() + " "
			}
			if want := "ip-2 ip-3 ip-2 ip-2 ip-3 ip-2 "; got != want {
				t.Errorf("pool-2 picks %q, want %q", got, want)
			}
			if ep := s.EgressPools(); len(ep) != 2 || ep["pool-2"].Name() != "pool-2" {
				t.Errorf("EgressPools = %v", ep)
			}
		})
	}
}

func TestParseSourcesAllKeys(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
[source."ha"]
name = "ha"
source_address = "127.0.0.1"
ha_proxy_server = "127.0.0.1:5000"
ha_proxy_source_address = "10.1.2.3"
ehlo_domain = "ha.example.com"
remote_port = 2525
ttl = "5 mins"

[source."socks"]
socks5_proxy_server = "proxy.example.com:1080"
socks5_proxy_source_address = "2001:db8::1"
socks5_proxy_username = "u"
socks5_proxy_password = "` + pwFile + `"
ttl = 90
suspend_when_unplumbed = { duration = "1 hour" }
suspend_when_proxy_unhealthy = { trigger = { Threshold = "3/5m" }, duration = "10m" }

[source."inline"]
socks5_proxy_server = "[::1]:1080"
socks5_proxy_source_address = "::1"
socks5_proxy_username = "u"
socks5_proxy_password = { key_data = "pw" }

[pool.empty]

[pool.p]
[pool.p.ha]
weight = 3
[pool.p.socks]
[pool.p.inline]
weight = 0
`
	s, err := ParseSources("sources.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ha := s.Sources["ha"].Options()
	if ha.RemotePort != 2525 || ha.TTL != 5*time.Minute || ha.HAProxySourceAddress != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("ha = %+v", ha)
	}
	if proto, server, src := s.Sources["ha"].Proxy(); proto != ProxyHAProxy || server != "127.0.0.1:5000" || src.String() != "10.1.2.3" {
		t.Errorf("ha proxy = %s %s %v", proto, server, src)
	}
	so := s.Sources["socks"].Options()
	if so.SOCKS5ProxyPassword != "s3cret" || so.TTL != 90*time.Second ||
		so.SuspendWhenUnplumbed == nil || so.SuspendWhenUnplumbed.Duration != time.Hour || so.SuspendWhenUnplumbed.Trigger != "Immediate" ||
		so.SuspendWhenProxyUnhealthy == nil || so.SuspendWhenProxyUnhealthy.Trigger != "3/5m" {
		t.Errorf("socks = %+v", so)
	}
	if s.Sources["inline"].Options().SOCKS5ProxyPassword != "pw" {
		t.Error("inline key_data")
	}
	if s.Pools["empty"] == nil || s.Pools["empty"].Next() != nil {
		t.Error("empty pool")
	}
	if e := s.Pools["p"].Entries(); len(e) != 2 || e[0].Source.Name() != "ha" || e[0].Weight != 3 || e[1].Weight != 1 {
		t.Errorf("pool p = %+v (weight 0 must drop the entry)", e)
	}
}

func TestLoadSourcesMerge(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.toml")
	b := filepath.Join(dir, "b.toml")
	os.WriteFile(a, []byte("[source.x]\nsource_address = \"10.0.0.1\"\nehlo_domain = \"a.example\"\n[pool.p.x]\nweight = 2\n"), 0o644)
	os.WriteFile(b, []byte("[source.x]\nsource_address = \"10.0.0.9\"\n[source.y]\n[pool.p.x]\nweight = 5\n[pool.p.y]\n"), 0o644)
	s, err := LoadSources(a, b)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Sources["x"].Options()
	if x.SourceAddress.String() != "10.0.0.9" || x.EHLODomain != "a.example" {
		t.Errorf("x = %+v", x)
	}
	e := s.Pools["p"].Entries()
	if len(e) != 2 || e[0].Weight != 5 || e[1].Source.Name() != "y" {
		t.Errorf("p = %+v", e)
	}
}

func TestParseSourcesErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown key", "[source.a]\nsource_adress = \"10.0.0.1\"\n", []string{`f.toml:2: unknown key source.a.source_adress`}},
		{"unknown pool key", "[source.a]\n[pool.p.a]\nwieght = 1\n", []string{`f.toml:3: unknown key pool.p.a.wieght`}},
		{"unknown top key", "[sources.a]\n", []string{`f.toml:1: unknown key sources`}},
		{"unknown source", "[source.a]\n[pool.p]\n[pool.p.a]\n[pool.p.\"b\"]\nweight = 2\n",
			[]string{`f.toml:4: pool 'p' references source 'b' which is not defined`}},
		{"bad address", "[source.a]\n\nsource_address = \"10.0.0.300\"\n", []string{`f.toml:3: source.a.source_address: invalid IP address "10.0.0.300"`}},
		{"bad proxy address", "[source.a]\nha_proxy_server = \"10.0.0.1:5000\"\nha_proxy_source_address = \"nope\"\n",
			[]string{`f.toml:3: source.a.ha_proxy_source_address: invalid IP address "nope"`}},
		{"bad proxy host", "[source.ip]\nsocks5_proxy_server = \"not a valid hostname:5000\"\nsocks5_proxy_source_address = \"10.0.0.1\"\n",
			[]string{`f.toml:2: source.ip.socks5_proxy_server: invalid hostname "not a valid hostname"`}},
		{"proxy without port", "[source.ip]\nsocks5_proxy_server = \"10.0.0.1\"\nsocks5_proxy_source_address = \"10.0.0.1\"\n",
			[]string{`f.toml:2: source.ip.socks5_proxy_server: invalid address "10.0.0.1": want host:port`}},
		{"half proxy", "[source.ip]\nha_proxy_server = \"10.0.0.1:5000\"\n",
			[]string{`f.toml:1: egress: source ip: ha_proxy_server is set without ha_proxy_source_address`}},
		{"bad port", "[source.a]\nremote_port = 70000\n", []string{`f.toml:2: source.a.remote_port: port 70000 out of range`}},
		{"bad ttl", "[source.a]\nttl = \"5 parsecs\"\n", []string{`f.toml:2:`, `unknown unit "parsecs"`}},
		{"wrong type", "[source.a]\nehlo_domain = 5\n", []string{`f.toml:2:`, `ehlo_domain`}},
		{"pool entry not a table", "[source.a]\n[pool.p]\na = 2\n", []string{`f.toml:3:`}},
		{"bad weight", "[source.a]\n[pool.p.a]\nweight = -1\n", []string{`f.toml:3: pool.p.a: weight -1 out of range`}},
		{"name mismatch", "[source.a]\nname = \"b\"\n", []string{`f.toml:2: source.a.name: name "b" differs`}},
		{"two errors", "[source.a]\nbogus = 1\n[pool.p.zz]\n", []string{`f.toml:2: unknown key source.a.bogus`, `f.toml:3: pool 'p' references source 'zz'`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSources("f.toml", []byte(tc.doc))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
