package queues

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mtakit/mtakit/internal/kumoconf"
	"github.com/mtakit/mtakit/shaping"
)

// Config is the content of one or more queues.toml files, in the format of
// KumoMTA's policy-extras queue helper. Build it with Load or Parse; it
// must not be changed afterwards (swap in a new one with Helper.Store).
type Config struct {
	// SchedulingHeader names the header KumoMTA imports scheduling
	// constraints from (msg:import_scheduling_header). mtakit parses it
	// but does not apply it: the mta has no per-message schedule yet, and
	// the header is left in the message.
	SchedulingHeader string
	// TenantHeader names the header that carries the tenant;
	// RemoveTenantHeader removes every such header once read.
	TenantHeader       string
	RemoveTenantHeader bool
	// CampaignHeader names the header that carries the campaign;
	// RemoveCampaignHeader removes every such header once read.
	CampaignHeader       string
	RemoveCampaignHeader bool
	// DefaultTenant is the tenant of messages without a tenant header.
	DefaultTenant string

	// Tenants holds the [tenant."NAME"] blocks.
	Tenants map[string]*Tenant
	// Queues holds the [queue."DOMAIN"] blocks, by lower-case domain;
	// "default" applies to every queue, and "*.example.com" to every
	// subdomain of example.com that has no block of its own.
	Queues map[string]*Domain
}

// Params is one block's queue settings: the keys of KumoMTA's
// kumo.make_queue_config plus the helper's routing_domain and
// overall_max_message_rate. nil means "not set here"; blocks are merged
// key by key (see Config.Resolve).
type Params struct {
	// Applied by the mta (see QueueConfig).
	RetryInterval    *time.Duration
	MaxRetryInterval *time.Duration
	MaxAge           *time.Duration
	EgressPool       *string
	Protocol         *Protocol

	// Parsed and validated so that KumoMTA configurations load, but not
	// applied by the mta yet.
	MaxMessageRate         *string // a throttle spec such as "100/s"
	ReapInterval           *time.Duration
	RefreshInterval        *time.Duration
	TimerwheelTickInterval *time.Duration
	Strategy               *string
	RefreshStrategy        *string
	ProviderName           *string
	ShrinkPolicy           []ShrinkPolicy
	// OverallMaxMessageRate is the helper's per-tenant / per-campaign
	// throttle (a throttle spec); not applied yet.
	OverallMaxMessageRate *string

	// RoutingDomain, when resolved for a message's recipient domain,
	// tenant and campaign, is set as the message's routing_domain meta
	// (so the message is queued as "...!routing_domain").
	RoutingDomain *string

	poolAt *position // where EgressPool was set
}

// Protocol is the protocol key: only SMTP is supported.
type Protocol struct {
	// MXList replaces MX resolution with these hosts, in order: names,
	// "[ip]" literals, with an optional ":port". A KumoMTA
	// { name = ..., addr = ... } entry becomes "[addr]" (its name is not
	// kept).
	MXList []string
	// TreatMXListAsSecure is parsed for DANE; mtakit does no DANE.
	TreatMXListAsSecure bool
}

// ShrinkPolicy is one shrink_policy entry.
type ShrinkPolicy struct {
	Interval time.Duration
	Policy   string
}

// Tenant is a [tenant."NAME"] block.
type Tenant struct {
	Params
	// RequireAuthz lists the SMTP AUTH identities (authz_id meta) allowed
	// to use this tenant through the tenant header.
	RequireAuthz []string
	// Campaigns holds [tenant."NAME".campaigns."CAMPAIGN"] blocks; in
	// KumoMTA only their overall_max_message_rate is used.
	Campaigns map[string]*Params
}

// Domain is a [queue."DOMAIN"] block: settings for the domain, and
// [queue."DOMAIN"."TENANT"] blocks.
type Domain struct {
	Params
	Tenants map[string]*DomainTenant
}

// DomainTenant is a [queue."DOMAIN"."TENANT"] block, with
// [queue."DOMAIN"."TENANT"."CAMPAIGN"] blocks.
type DomainTenant struct {
	Params
	Campaigns map[string]*Params
}

// position locates a key in a file, for error messages.
type position struct {
	file, doc string
	key       toml.Key
}

func (p *position) errorf(format string, args ...any) error {
	return kumoconf.KeyError(p.file, p.doc, p.key, format, args...)
}

// Load reads queues.toml files and merges them in order: a later file's
// keys override an earlier one's, block by block and key by key, as the
// helper's recursive merge does. Errors name the file and line: unknown
// keys, values of the wrong type or out of range, unsupported protocols.
func Load(files ...string) (*Config, error) {
	c := &Config{}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("queues: %w", err)
		}
		errs = append(errs, c.merge(f, string(data))...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Parse parses one queues.toml document; name is used in error messages
// ("name:line: message"). See Load.
func Parse(name string, data []byte) (*Config, error) {
	c := &Config{}
	if errs := c.merge(name, string(data)); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// walker parses one document.
type walker struct {
	file, doc string
	errs      []error
}

func (w *walker) at(key toml.Key) *position {
	return &position{file: w.file, doc: w.doc, key: append(toml.Key(nil), key...)}
}

func (w *walker) fail(key toml.Key, format string, args ...any) {
	w.errs = append(w.errs, w.at(key).errorf("%s: "+format, append([]any{kumoconf.FormatKey(key)}, args...)...))
}

func (c *Config) merge(file, doc string) []error {
	var raw map[string]any
	if _, err := toml.Decode(doc, &raw); err != nil {
		return []error{kumoconf.DecodeError(file, err)}
	}
	w := &walker{file: file, doc: doc}
	for _, k := range sortedKeys(raw) {
		v := raw[k]
		key := toml.Key{k}
		switch k {
		case "scheduling_header":
			w.str(key, v, &c.SchedulingHeader)
		case "tenant_header":
			w.str(key, v, &c.TenantHeader)
		case "campaign_header":
			w.str(key, v, &c.CampaignHeader)
		case "default_tenant":
			w.str(key, v, &c.DefaultTenant)
		case "remove_tenant_header":
			w.boolean(key, v, &c.RemoveTenantHeader)
		case "remove_campaign_header":
			w.boolean(key, v, &c.RemoveCampaignHeader)
		case "tenant":
			m, ok := w.table(key, v)
			if !ok {
				continue
			}
			if c.Tenants == nil {
				c.Tenants = map[string]*Tenant{}
			}
			for _, name := range sortedKeys(m) {
				tk := child(key, name)
				tm, ok := w.table(tk, m[name])
				if !ok {
					continue
				}
				t := c.Tenants[name]
				if t == nil {
					t = &Tenant{}
					c.Tenants[name] = t
				}
				w.tenant(tk, tm, t)
			}
		case "queue":
			m, ok := w.table(key, v)
			if !ok {
				continue
			}
			if c.Queues == nil {
				c.Queues = map[string]*Domain{}
			}
			for _, name := range sortedKeys(m) {
				dk := child(key, name)
				dm, ok := w.table(dk, m[name])
				if !ok {
					continue
				}
				lname := strings.ToLower(name)
				d := c.Queues[lname]
				if d == nil {
					d = &Domain{}
					c.Queues[lname] = d
				}
				w.domain(dk, dm, d)
			}
		default:
			w.errs = append(w.errs, w.at(key).errorf("unknown key %s", kumoconf.FormatKey(key)))
		}
	}
	return w.errs
}

func (w *walker) table(key toml.Key, v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		w.fail(key, "invalid type %s (want a table)", typeName(v))
	}
	return m, ok
}

func (w *walker) str(key toml.Key, v any, dst *string) bool {
	s, ok := v.(string)
	if !ok {
		w.fail(key, "invalid type %s (want a string)", typeName(v))
		return false
	}
	*dst = s
	return true
}

func (w *walker) boolean(key toml.Key, v any, dst *bool) {
	b, ok := v.(bool)
	if !ok {
		w.fail(key, "invalid type %s (want a boolean)", typeName(v))
		return
	}
	*dst = b
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// block kinds: which keys besides the queue options a block takes.
type blockKind int

const (
	kindDomain       blockKind = iota // routing_domain, overall_max_message_rate, tenant tables
	kindDomainTenant                  // routing_domain, overall_max_message_rate, campaign tables
	kindCampaign                      // routing_domain, overall_max_message_rate
	kindTenant                        // require_authz, overall_max_message_rate, campaigns
)

func (w *walker) domain(key toml.Key, m map[string]any, d *Domain) {
	for _, sub := range w.params(key, m, &d.Params, kindDomain) {
		tk := child(key, sub)
		if d.Tenants == nil {
			d.Tenants = map[string]*DomainTenant{}
		}
		t := d.Tenants[sub]
		if t == nil {
			t = &DomainTenant{}
			d.Tenants[sub] = t
		}
		tm := m[sub].(map[string]any)
		for _, camp := range w.params(tk, tm, &t.Params, kindDomainTenant) {
			if t.Campaigns == nil {
				t.Campaigns = map[string]*Params{}
			}
			p := t.Campaigns[camp]
			if p == nil {
				p = &Params{}
				t.Campaigns[camp] = p
			}
			w.params(child(tk, camp), tm[camp].(map[string]any), p, kindCampaign)
		}
	}
}

func (w *walker) tenant(key toml.Key, m map[string]any, t *Tenant) {
	w.params(key, m, &t.Params, kindTenant)
	if v, ok := m["require_authz"]; ok {
		list, ok := stringList(v)
		if !ok {
			w.fail(child(key, "require_authz"), "invalid type %s (want an array of strings)", typeName(v))
		} else {
			t.RequireAuthz = list
		}
	}
	if v, ok := m["campaigns"]; ok {
		ck := child(key, "campaigns")
		cm, ok := w.table(ck, v)
		if !ok {
			return
		}
		for _, name := range sortedKeys(cm) {
			k := child(ck, name)
			pm, ok := w.table(k, cm[name])
			if !ok {
				continue
			}
			if t.Campaigns == nil {
				t.Campaigns = map[string]*Params{}
			}
			p := t.Campaigns[name]
			if p == nil {
				p = &Params{}
				t.Campaigns[name] = p
			}
			w.params(k, pm, p, kindCampaign)
		}
	}
}

func stringList(v any) ([]string, bool) {
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// params applies the keys of block m to p and returns the keys that name
// sub-blocks (tenants of a domain, campaigns of a domain tenant).
func (w *walker) params(key toml.Key, m map[string]any, p *Params, kind blockKind) (subs []string) {
	for _, k := range sortedKeys(m) {
		v := m[k]
		kk := child(key, k)
		if w.option(kk, k, v, p) {
			continue
		}
		switch {
		case k == "overall_max_message_rate":
			var s string
			if w.str(kk, v, &s) && w.throttle(kk, s) {
				p.OverallMaxMessageRate = &s
			}
		case k == "routing_domain" && kind != kindTenant:
			var s string
			if w.str(kk, v, &s) {
				if s == "" {
					w.fail(kk, "empty routing domain")
				} else {
					p.RoutingDomain = &s
				}
			}
		case kind == kindTenant && (k == "require_authz" || k == "campaigns"):
			// handled by tenant
		case kind == kindDomain || kind == kindDomainTenant:
			if _, ok := v.(map[string]any); ok {
				subs = append(subs, k)
				continue
			}
			w.errs = append(w.errs, w.at(kk).errorf("unknown key %s", kumoconf.FormatKey(kk)))
		default:
			w.errs = append(w.errs, w.at(kk).errorf("unknown key %s", kumoconf.FormatKey(kk)))
		}
	}
	return subs
}

func (w *walker) duration(key toml.Key, v any) (*time.Duration, bool) {
	var d kumoconf.Duration
	if err := d.UnmarshalTOML(v); err != nil {
		w.fail(key, "%v", err)
		return nil, false
	}
	dur := time.Duration(d)
	return &dur, true
}

func (w *walker) throttle(key toml.Key, s string) bool {
	if _, err := shaping.ParseThrottle(s); err != nil {
		w.fail(key, "%v", err)
		return false
	}
	return true
}

// option applies k if it is a make_queue_config key.
func (w *walker) option(key toml.Key, k string, v any, p *Params) bool {
	durationKey := func(dst **time.Duration) {
		if d, ok := w.duration(key, v); ok {
			*dst = d
		}
	}
	stringKey := func(dst **string) {
		var s string
		if w.str(key, v, &s) {
			*dst = &s
		}
	}
	switch k {
	case "retry_interval":
		durationKey(&p.RetryInterval)
	case "max_retry_interval":
		durationKey(&p.MaxRetryInterval)
	case "max_age":
		durationKey(&p.MaxAge)
	case "reap_interval":
		durationKey(&p.ReapInterval)
	case "refresh_interval":
		durationKey(&p.RefreshInterval)
	case "timerwheel_tick_interval":
		durationKey(&p.TimerwheelTickInterval)
	case "egress_pool":
		var s string
		if w.str(key, v, &s) {
			p.EgressPool, p.poolAt = &s, w.at(key)
		}
	case "max_message_rate":
		var s string
		if w.str(key, v, &s) && w.throttle(key, s) {
			p.MaxMessageRate = &s
		}
	case "strategy":
		stringKey(&p.Strategy)
	case "refresh_strategy":
		var s string
		if w.str(key, v, &s) {
			if s != "Ttl" && s != "Epoch" {
				w.fail(key, "invalid value %q (want \"Ttl\" or \"Epoch\")", s)
			} else {
				p.RefreshStrategy = &s
			}
		}
	case "provider_name":
		stringKey(&p.ProviderName)
	case "shrink_policy":
		w.shrinkPolicy(key, v, p)
	case "protocol":
		w.protocol(key, v, p)
	default:
		return false
	}
	return true
}

func (w *walker) shrinkPolicy(key toml.Key, v any, p *Params) {
	var items []map[string]any
	switch x := v.(type) {
	case []map[string]any:
		items = x
	case []any:
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				w.fail(key, "invalid entry type %s (want a table)", typeName(e))
				return
			}
			items = append(items, m)
		}
	default:
		w.fail(key, "invalid type %s (want an array of tables)", typeName(v))
		return
	}
	out := []ShrinkPolicy{}
	for _, m := range items {
		var sp ShrinkPolicy
		for k, val := range m {
			switch k {
			case "interval":
				d, ok := w.duration(key, val)
				if !ok {
					return
				}
				sp.Interval = *d
			case "policy":
				if !w.str(key, val, &sp.Policy) {
					return
				}
			default:
				w.fail(key, "unknown key %q in a shrink_policy entry", k)
				return
			}
		}
		out = append(out, sp)
	}
	p.ShrinkPolicy = out
}

func (w *walker) protocol(key toml.Key, v any, p *Params) {
	m, ok := w.table(key, v)
	if !ok {
		return
	}
	proto := &Protocol{}
	for _, k := range sortedKeys(m) {
		kk := child(key, k)
		if k != "smtp" {
			w.fail(kk, "protocol %q is not supported by mtakit (only smtp)", k)
			return
		}
		sm, ok := w.table(kk, m[k])
		if !ok {
			return
		}
		for _, sk := range sortedKeys(sm) {
			skk := child(kk, sk)
			switch sk {
			case "mx_list":
				arr, ok := sm[sk].([]any)
				if !ok {
					w.fail(skk, "invalid type %s (want an array)", typeName(sm[sk]))
					return
				}
				for _, e := range arr {
					entry, err := mxEntry(e)
					if err != nil {
						w.fail(skk, "%v", err)
						return
					}
					proto.MXList = append(proto.MXList, entry)
				}
			case "treat_mx_list_as_secure":
				w.boolean(skk, sm[sk], &proto.TreatMXListAsSecure)
			default:
				w.errs = append(w.errs, w.at(skk).errorf("unknown key %s", kumoconf.FormatKey(skk)))
			}
		}
	}
	p.Protocol = proto
}

// mxEntry converts an mx_list entry: a host name or "[ip]" literal with an
// optional port, or { name = "...", addr = "ip[:port]" }.
func mxEntry(e any) (string, error) {
	switch x := e.(type) {
	case string:
		if x == "" || strings.ContainsAny(x, " \t\r\n") {
			return "", fmt.Errorf("invalid mx_list entry %q", x)
		}
		return x, nil
	case map[string]any:
		addr, ok := x["addr"].(string)
		if _, hasName := x["name"].(string); !ok || !hasName || len(x) != 2 {
			return "", errors.New("invalid mx_list entry (want a host name or { name = \"...\", addr = \"...\" })")
		}
		if ap, err := netip.ParseAddrPort(addr); err == nil {
			return fmt.Sprintf("[%s]:%d", ap.Addr(), ap.Port()), nil
		}
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return "", fmt.Errorf("invalid mx_list addr %q", addr)
		}
		return "[" + a.String() + "]", nil
	}
	return "", fmt.Errorf("invalid mx_list entry of type %s", typeName(e))
}

// CheckPools reports every egress_pool that names a pool for which known
// returns false, as "file:line: ..." errors (KumoMTA's validate_config
// check against the sources helper). The built-in "unspecified" pool is
// always known. Pass, for example, the Pools of egress.LoadSources:
//
//	err := cfg.CheckPools(func(name string) bool { _, ok := srcs.Pools[name]; return ok })
func (c *Config) CheckPools(known func(name string) bool) error {
	var errs []error
	check := func(p *Params, what string) {
		if p.EgressPool == nil || *p.EgressPool == "unspecified" || known(*p.EgressPool) {
			return
		}
		msg := fmt.Sprintf("%s uses pool '%s' which is not present in your sources helper data", what, *p.EgressPool)
		if p.poolAt != nil {
			errs = append(errs, p.poolAt.errorf("%s", msg))
		} else {
			errs = append(errs, errors.New(msg))
		}
	}
	for _, name := range sortedKeys(c.Tenants) {
		t := c.Tenants[name]
		check(&t.Params, fmt.Sprintf("tenant '%s'", name))
		for _, cn := range sortedKeys(t.Campaigns) {
			check(t.Campaigns[cn], fmt.Sprintf("tenant '%s' campaign '%s'", name, cn))
		}
	}
	for _, name := range sortedKeys(c.Queues) {
		d := c.Queues[name]
		check(&d.Params, fmt.Sprintf("domain '%s'", name))
		for _, tn := range sortedKeys(d.Tenants) {
			t := d.Tenants[tn]
			check(&t.Params, fmt.Sprintf("domain '%s' tenant '%s'", name, tn))
			for _, cn := range sortedKeys(t.Campaigns) {
				check(t.Campaigns[cn], fmt.Sprintf("domain '%s' tenant '%s' campaign '%s'", name, tn, cn))
			}
		}
	}
	return errors.Join(errs...)
}

// child returns key extended by k, in a new slice.
func child(key toml.Key, k string) toml.Key {
	return append(append(toml.Key(nil), key...), k)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
