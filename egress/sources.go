package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mtakit/mtakit/internal/kumoconf"
)

// Sources is the content of one or more sources.toml files in the format
// of KumoMTA's policy-extras sources helper: egress sources by name and
// weighted pools of them.
type Sources struct {
	// Sources holds the [source."NAME"] blocks.
	Sources map[string]*Source
	// Pools holds the [pool."NAME"] blocks. A pool whose entries all
	// have weight 0, or that has none, is present and yields no source.
	Pools map[string]*WeightedPool
}

// EgressPools returns the pools as mta.Options.EgressPools wants them.
func (s *Sources) EgressPools() map[string]Pool {
	out := make(map[string]Pool, len(s.Pools))
	for name, p := range s.Pools {
		out[name] = p
	}
	return out
}

// SuspendOnFailure is a suspend_when_unplumbed or
// suspend_when_proxy_unhealthy rule. mtakit parses it so that KumoMTA
// configurations load, but does not act on it yet.
type SuspendOnFailure struct {
	// Trigger is "Immediate" (the default) or a "N/period" threshold.
	Trigger string
	// Duration is how long the source stays suspended.
	Duration time.Duration
}

// fileSource is one [source."NAME"] table; pointers record which keys
// the file sets so that files merge key by key.
type fileSource struct {
	Name                      *string            `toml:"name"`
	SourceAddress             *string            `toml:"source_address"`
	EHLODomain                *string            `toml:"ehlo_domain"`
	RemotePort                *int64             `toml:"remote_port"`
	TTL                       *kumoconf.Duration `toml:"ttl"`
	HAProxyServer             *string            `toml:"ha_proxy_server"`
	HAProxySourceAddress      *string            `toml:"ha_proxy_source_address"`
	SOCKS5ProxyServer         *string            `toml:"socks5_proxy_server"`
	SOCKS5ProxySourceAddress  *string            `toml:"socks5_proxy_source_address"`
	SOCKS5ProxyUsername       *string            `toml:"socks5_proxy_username"`
	SOCKS5ProxyPassword       any                `toml:"socks5_proxy_password"`
	SuspendWhenUnplumbed      *fileSuspend       `toml:"suspend_when_unplumbed"`
	SuspendWhenProxyUnhealthy *fileSuspend       `toml:"suspend_when_proxy_unhealthy"`
}

type fileSuspend struct {
	Trigger  any                `toml:"trigger"`
	Duration *kumoconf.Duration `toml:"duration"`
}

type filePoolEntry struct {
	Weight *int64 `toml:"weight"`
}

type sourcesFile struct {
	Source map[string]*fileSource               `toml:"source"`
	Pool   map[string]map[string]*filePoolEntry `toml:"pool"`
}

// origin locates a key in one of the files, for error messages.
type origin struct {
	file, doc string
	key       toml.Key
}

func (o origin) errorf(format string, args ...any) error {
	return kumoconf.KeyError(o.file, o.doc, o.key, format, args...)
}

type sourceAcc struct {
	opts SourceOptions
	at   origin // the last file defining the source
	bad  bool   // a key had an invalid value (already reported)
}

type poolEntryAcc struct {
	name   string
	weight int64
	at     origin
}

type poolAcc struct {
	entries []*poolEntryAcc
}

// sourcesBuilder merges sources files.
type sourcesBuilder struct {
	sources map[string]*sourceAcc
	pools   map[string]*poolAcc
	errs    []error
	// broken: a document did not decode, so cross-references are not
	// checked (they would report sources that are merely unread).
	broken bool
}

// LoadSources reads sources.toml files (KumoMTA's policy-extras sources
// helper format) and builds their sources and pools. Later files override
// earlier ones key by key: a source's keys merge, and a pool entry named
// again replaces the earlier entry's weight.
//
//	[source."ip-1"]
//	source_address = "10.0.0.1"
//	ehlo_domain = "mta1.example.com"
//
//	[pool."pool-1"]
//	[pool."pool-1"."ip-1"]
//	weight = 2
//
// The keys of a source are those of KumoMTA's kumo.make_egress_source
// (see SourceOptions): source_address, ehlo_domain, remote_port, ttl,
// ha_proxy_server, ha_proxy_source_address, socks5_proxy_server,
// socks5_proxy_source_address, socks5_proxy_username,
// socks5_proxy_password (a file name, or { key_data = "..." }, read when
// the file is loaded), suspend_when_unplumbed and
// suspend_when_proxy_unhealthy (parsed, not acted on), and name (which
// must match the table's name). A pool entry has one key, weight
// (default 1; 0 leaves the source out of the pool, as in KumoMTA).
//
// Errors name the file and line: unknown keys, values of the wrong type,
// invalid addresses and host names, pools naming a source that no file
// defines. All such errors are reported together.
func LoadSources(files ...string) (*Sources, error) {
	b := &sourcesBuilder{sources: map[string]*sourceAcc{}, pools: map[string]*poolAcc{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("egress: %w", err)
		}
		b.add(f, string(data))
	}
	return b.build()
}

// ParseSources parses one sources.toml document; name is used in error
// messages ("name:line: message"). See LoadSources.
func ParseSources(name string, data []byte) (*Sources, error) {
	b := &sourcesBuilder{sources: map[string]*sourceAcc{}, pools: map[string]*poolAcc{}}
	b.add(name, string(data))
	return b.build()
}

// add merges one document and records its errors.
func (b *sourcesBuilder) add(file, doc string) {
	var f sourcesFile
	md, err := toml.Decode(doc, &f)
	if err != nil {
		b.errs = append(b.errs, kumoconf.DecodeError(file, err))
		b.broken = true
		return
	}
	// socks5_proxy_password and suspend triggers are decoded as any:
	// their inner keys are checked below.
	errs := kumoconf.UndecodedErrors(file, doc, md, func(k toml.Key) bool {
		return len(k) > 3 && k[0] == "source" && (k[2] == "socks5_proxy_password" ||
			(len(k) > 4 && k[3] == "trigger"))
	})
	at := func(key ...string) origin { return origin{file: file, doc: doc, key: key} }

	for _, name := range sortedNames(f.Source) {
		fs := f.Source[name]
		acc := b.sources[name]
		if acc == nil {
			acc = &sourceAcc{opts: SourceOptions{Name: name}}
			b.sources[name] = acc
		}
		acc.at = at("source", name)
		if e := mergeSource(&acc.opts, fs, name, at); len(e) > 0 {
			acc.bad = true
			errs = append(errs, e...)
		}
	}
	for _, pool := range sortedNames(f.Pool) {
		acc := b.pools[pool]
		if acc == nil {
			acc = &poolAcc{}
			b.pools[pool] = acc
		}
		for _, src := range sortedNames(f.Pool[pool]) {
			e := f.Pool[pool][src]
			w := int64(1)
			if e != nil && e.Weight != nil {
				w = *e.Weight
				if w < 0 || w > 1<<31-1 {
					errs = append(errs, at("pool", pool, src, "weight").errorf(
						"pool.%s: weight %d out of range", kumoconf.FormatKey(toml.Key{pool, src}), w))
					continue
				}
			}
			entry := &poolEntryAcc{name: src, weight: w, at: at("pool", pool, src)}
			replaced := false
			for i, old := range acc.entries {
				if old.name == src {
					acc.entries[i], replaced = entry, true
				}
			}
			if !replaced {
				acc.entries = append(acc.entries, entry)
			}
		}
	}
	b.errs = append(b.errs, errs...)
}

// mergeSource applies the keys fs sets to opts.
func mergeSource(opts *SourceOptions, fs *fileSource, name string, at func(...string) origin) []error {
	if fs == nil {
		return nil
	}
	var errs []error
	fail := func(key string, format string, args ...any) {
		errs = append(errs, at("source", name, key).errorf("source.%s.%s: "+format,
			append([]any{kumoconf.FormatKey(toml.Key{name}), key}, args...)...))
	}
	addr := func(key string, v *string, dst *netip.Addr) {
		if v == nil {
			return
		}
		a, err := netip.ParseAddr(*v)
		if err != nil || a.Zone() != "" {
			fail(key, "invalid IP address %q", *v)
			return
		}
		*dst = a.Unmap()
	}
	if fs.Name != nil && *fs.Name != name {
		fail("name", "name %q differs from the table's name %q", *fs.Name, name)
	}
	addr("source_address", fs.SourceAddress, &opts.SourceAddress)
	addr("ha_proxy_source_address", fs.HAProxySourceAddress, &opts.HAProxySourceAddress)
	addr("socks5_proxy_source_address", fs.SOCKS5ProxySourceAddress, &opts.SOCKS5ProxySourceAddress)
	if v := fs.EHLODomain; v != nil {
		if err := checkEHLOName(*v); err != nil {
			fail("ehlo_domain", "%v", err)
		}
		opts.EHLODomain = *v
	}
	if v := fs.RemotePort; v != nil {
		if *v <= 0 || *v > 65535 {
			fail("remote_port", "port %d out of range", *v)
		} else {
			opts.RemotePort = int(*v)
		}
	}
	if v := fs.TTL; v != nil {
		opts.TTL = time.Duration(*v)
	}
	server := func(key string, v *string, dst *string) {
		if v == nil {
			return
		}
		if _, _, err := ParseProxyServer(*v); err != nil {
			fail(key, "%v", err)
			return
		}
		*dst = *v
	}
	server("ha_proxy_server", fs.HAProxyServer, &opts.HAProxyServer)
	server("socks5_proxy_server", fs.SOCKS5ProxyServer, &opts.SOCKS5ProxyServer)
	if v := fs.SOCKS5ProxyUsername; v != nil {
		opts.SOCKS5ProxyUsername = *v
	}
	if fs.SOCKS5ProxyPassword != nil {
		pw, err := keySource(fs.SOCKS5ProxyPassword)
		if err != nil {
			fail("socks5_proxy_password", "%v", err)
		} else {
			opts.SOCKS5ProxyPassword = pw
		}
	}
	suspend := func(key string, v *fileSuspend, dst **SuspendOnFailure) {
		if v == nil {
			return
		}
		s := &SuspendOnFailure{Trigger: "Immediate"}
		if v.Duration == nil {
			fail(key, "duration is required")
			return
		}
		s.Duration = time.Duration(*v.Duration)
		switch t := v.Trigger.(type) {
		case nil:
		case string:
			if t != "Immediate" {
				fail(key, "invalid trigger %q (want \"Immediate\" or { Threshold = \"N/period\" })", t)
				return
			}
		case map[string]any:
			th, ok := t["Threshold"].(string)
			if !ok || len(t) != 1 {
				fail(key, "invalid trigger (want \"Immediate\" or { Threshold = \"N/period\" })")
				return
			}
			s.Trigger = th
		default:
			fail(key, "invalid trigger (want \"Immediate\" or { Threshold = \"N/period\" })")
			return
		}
		*dst = s
	}
	suspend("suspend_when_unplumbed", fs.SuspendWhenUnplumbed, &opts.SuspendWhenUnplumbed)
	suspend("suspend_when_proxy_unhealthy", fs.SuspendWhenProxyUnhealthy, &opts.SuspendWhenProxyUnhealthy)
	return errs
}

// keySource reads a KumoMTA KeySource: a file name, or { key_data = "..." }.
func keySource(v any) (string, error) {
	switch x := v.(type) {
	case string:
		b, err := os.ReadFile(x)
		if err != nil {
			return "", err
		}
		return string(b), nil
	case map[string]any:
		if kd, ok := x["key_data"].(string); ok && len(x) == 1 {
			return kd, nil
		}
		if _, ok := x["vault_mount"]; ok {
			return "", errors.New("HashiCorp Vault key sources are not supported")
		}
		return "", errors.New("invalid key source (want a file name or { key_data = \"...\" })")
	}
	return "", fmt.Errorf("invalid type %T for a key source (want a file name or { key_data = \"...\" })", v)
}

// build validates the merged sources and makes the pools.
func (b *sourcesBuilder) build() (*Sources, error) {
	if b.broken {
		return nil, errors.Join(b.errs...)
	}
	out := &Sources{Sources: make(map[string]*Source, len(b.sources)), Pools: make(map[string]*WeightedPool, len(b.pools))}
	errs := b.errs
	for _, name := range sortedNames(b.sources) {
		acc := b.sources[name]
		if acc.bad {
			continue
		}
		s, err := NewSource(acc.opts)
		if err != nil {
			errs = append(errs, acc.at.errorf("%v", err))
			continue
		}
		out.Sources[name] = s
	}
	for _, pool := range sortedNames(b.pools) {
		var entries []WeightedSource
		for _, e := range b.pools[pool].entries {
			if _, ok := b.sources[e.name]; !ok {
				errs = append(errs, e.at.errorf("pool '%s' references source '%s' which is not defined", pool, e.name))
				continue
			}
			if e.weight == 0 {
				continue
			}
			if s := out.Sources[e.name]; s != nil {
				entries = append(entries, WeightedSource{Source: s, Weight: int(e.weight)})
			}
		}
		out.Pools[pool] = NewPool(pool, entries...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func sortedNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
