package shaping

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultFilePath is where KumoMTA installs the shaping file that its
// policy-extras.shaping helper loads first unless no_default_files is set.
// ReadFiles serves it from the copy embedded in this package when no such
// file exists on disk.
const DefaultFilePath = "/opt/kumomta/share/policy-extras/shaping.toml"

//go:embed assets/policy-extras/shaping.toml
var communityFile []byte

// DefaultFile returns KumoMTA's default shaping file (assets/policy-extras/
// shaping.toml of KumoMTA, Apache License 2.0; see assets/NOTICE), named
// DefaultFilePath.
func DefaultFile() File {
	return File{Name: DefaultFilePath, Data: slices.Clone(communityFile)}
}

// File is one shaping document: Name is used in error messages and to
// pick the format (only TOML is supported; a ".json" name is an error).
type File struct {
	Name string
	Data []byte
}

// ReadFiles reads shaping files from disk, in order. DefaultFilePath is
// served from the embedded copy when it does not exist on disk. A file
// that cannot be read is an error (KumoMTA's local_load = "Error").
func ReadFiles(paths ...string) ([]File, error) {
	out := make([]File, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			if p == DefaultFilePath && errors.Is(err, os.ErrNotExist) {
				out = append(out, DefaultFile())
				continue
			}
			return nil, fmt.Errorf("shaping: local shaping source %s: %w", p, err)
		}
		out = append(out, File{Name: p, Data: data})
	}
	return out, nil
}

// CheckLevel is the severity given to a class of problem found while
// loading (KumoMTA's Ignore, Warn, Error). Errors are reported by
// Shaping.Errors and logged; as in KumoMTA they do not fail the load.
type CheckLevel int

// Check levels.
const (
	Ignore CheckLevel = iota
	Warn
	Error
)

// ErrNullMX may be returned by Options.LookupMX for a domain whose MX is
// the null MX ("."); an empty host list with a nil error means the same.
var ErrNullMX = errors.New("shaping: null MX")

// Options configures Load.
type Options struct {
	// LookupMX returns the MX host names of a domain, in the order the
	// queue engine gives them to SiteName (by preference, then name), or
	// the domain itself when it has no MX records (the implicit MX), as
	// KumoMTA's MailExchanger does. It is called at load time for every
	// mx_rollup domain block, and at PathConfig time for provider blocks
	// that match on MX host names (results are cached for MXCacheTTL).
	// Nil makes every mx_rollup block a DNS failure and no MXSuffix or
	// HostName provider rule match.
	LookupMX func(ctx context.Context, domain string) ([]string, error)
	// SiteName turns MX host names into KumoMTA's site name (the queue
	// engine passes egress.SiteName). Nil makes every mx_rollup block a
	// DNS failure.
	SiteName func(hosts []string) string

	// Check levels, as KumoMTA's kumo.shaping.load options; all default
	// to Ignore. DNSFail: an mx_rollup block whose MX lookup failed (the
	// block is skipped). NullMX: an mx_rollup block for a null-MX domain
	// (skipped). AliasedSite: several mx_rollup blocks roll up to one
	// site. ProviderOverlap: an mx_rollup domain also matched by a
	// provider block.
	DNSFail, NullMX, AliasedSite, ProviderOverlap CheckLevel

	// OnAction, when set, is called with every action that Observe
	// triggers, after it is in force: a fleet passes it on to the other
	// nodes, which call ImportAction.
	OnAction func(Action)

	// Logger receives load warnings and errors and automation actions;
	// nil discards.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// RegexTimeout bounds one automation regex match; 0 is 100ms. A match
	// that times out counts as no match.
	RegexTimeout time.Duration
	// MXCacheTTL is how long provider matches found through LookupMX are
	// kept; 0 is 5 minutes. A failed lookup is retried after a minute at
	// most.
	MXCacheTTL time.Duration
	// MaxCacheEntries bounds the resolved path cache; 0 is 100000.
	MaxCacheEntries int
}

func (o *Options) regexTimeout() time.Duration {
	if o.RegexTimeout > 0 {
		return o.RegexTimeout
	}
	return 100 * time.Millisecond
}

// Shaping is a loaded shaping configuration with its automation state:
// KumoMTA's policy-extras.shaping helper and tsa-daemon in one process.
// It implements Shaper. Use Load to build one; all methods are safe for
// concurrent use.
type Shaping struct {
	opts      Options
	log       *slog.Logger
	now       func() time.Time
	bySite    map[string]*entry
	byDomain  map[string]*entry // includes "default"
	providers []*providerEntry
	warnings  []string
	errors    []string

	cacheMu sync.RWMutex
	cache   map[pathKey]*resolved

	mxMu    sync.Mutex
	mxCache map[string]*providerMatch

	auto automation
}

// Load merges shaping files, in order, as KumoMTA's kumo.shaping.load
// does: every block is checked (unknown keys and invalid values are
// errors naming file and line, and fail the load), blocks of the same
// domain or provider merge key by key in file order unless a later one
// sets replace_base, and mx_rollup domain blocks (the default) are keyed
// by the site name of their MX hosts, looked up now through
// opts.LookupMX. Problems classed by the check levels do not fail the
// load; see Errors and Warnings.
func Load(ctx context.Context, opts Options, files ...File) (*Shaping, error) {
	s := &Shaping{
		opts:     opts,
		log:      opts.Logger,
		now:      opts.Now,
		bySite:   map[string]*entry{},
		byDomain: map[string]*entry{},
		cache:    map[pathKey]*resolved{},
		mxCache:  map[string]*providerMatch{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.auto.init()

	var parsed []*fileConfig
	var errs []error
	for _, f := range files {
		if strings.HasSuffix(f.Name, ".json") {
			errs = append(errs, fmt.Errorf("%s: JSON shaping files are not supported; use TOML", f.Name))
			continue
		}
		fc, err := parseFile(f.Name, f.Data, &opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		parsed = append(parsed, fc)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Resolve the MX of every mx_rollup domain first, concurrently.
	mx := s.preResolve(ctx, parsed)

	siteAliases := map[string][]string{}
	var siteOrder []string
	for _, fc := range parsed {
		if fc.def != nil {
			mergeInto(s.byDomain, "default", fc.def)
		}
		for _, d := range fc.domains {
			e := fc.domain[d]
			if e == nil {
				continue
			}
			name := strings.ToLower(d)
			if !strings.Contains(strings.TrimSuffix(name, "."), ".") && isDomainName(name) {
				s.warn(Warn, fmt.Sprintf("Entry for domain '%s' consists of a single DNS label. Domain names in TOML sections need to be quoted like '[\"%s.com\"]' otherwise the '.' will create a nested table rather than being added to the domain name.", d, d))
			}
			if !e.mxRollup {
				mergeInto(s.byDomain, name, e)
				continue
			}
			r := mx[name]
			switch {
			case r.err != nil:
				s.warn(opts.DNSFail, fmt.Sprintf("error resolving MX for %s: %v. Ignoring the shaping config for that domain.", d, r.err))
				continue
			case r.site == "":
				s.warn(opts.NullMX, fmt.Sprintf("domain %s has a NULL MX and cannot be used with mx_rollup=true. Ignoring the shaping config for that domain.", d))
				continue
			}
			if _, ok := siteAliases[r.site]; !ok {
				siteOrder = append(siteOrder, r.site)
			}
			siteAliases[r.site] = append(siteAliases[r.site], d)
			mergeInto(s.bySite, r.site, e)
		}
		for _, p := range fc.providers {
			if old := s.providerByName(p.name); old != nil {
				old.mergeFrom(p)
			} else {
				s.providers = append(s.providers, p.clone())
			}
		}
	}
	if opts.AliasedSite != Ignore {
		for _, site := range siteOrder {
			if a := siteAliases[site]; len(a) > 1 {
				s.warn(opts.AliasedSite, fmt.Sprintf("multiple domain blocks alias to the same site: %s: %s", site, strings.Join(a, ", ")))
			}
		}
	}
	if opts.ProviderOverlap != Ignore {
		for _, d := range sortedKeys(mx) {
			if mx[d].err != nil {
				continue
			}
			var names []string
			for _, p := range s.providers {
				if p.matchesHosts(d, mx[d].hosts) {
					names = append(names, p.name)
				}
			}
			if len(names) > 0 {
				s.warn(opts.ProviderOverlap, fmt.Sprintf("domain %s is also matched by provider(s): %s", d, strings.Join(names, ", ")))
			}
		}
	}
	return s, nil
}

// LoadPaths is ReadFiles followed by Load.
func LoadPaths(ctx context.Context, opts Options, paths ...string) (*Shaping, error) {
	files, err := ReadFiles(paths...)
	if err != nil {
		return nil, err
	}
	return Load(ctx, opts, files...)
}

// Warnings returns the problems found at load time with level Warn.
func (s *Shaping) Warnings() []string { return slices.Clone(s.warnings) }

// Errors returns the problems found at load time with level Error.
func (s *Shaping) Errors() []string { return slices.Clone(s.errors) }

// Sites returns the site names that mx_rollup domain blocks resolved to.
func (s *Shaping) Sites() []string { return sortedKeys(s.bySite) }

func (s *Shaping) warn(level CheckLevel, msg string) {
	switch level {
	case Warn:
		s.warnings = append(s.warnings, msg)
		s.log.Warn("shaping: " + msg)
	case Error:
		s.errors = append(s.errors, msg)
		s.log.Error("shaping: " + msg)
	}
}

func (s *Shaping) providerByName(name string) *providerEntry {
	for _, p := range s.providers {
		if p.name == name {
			return p
		}
	}
	return nil
}

type mxResult struct {
	hosts []string
	site  string // "" for a null MX
	err   error
}

func (s *Shaping) preResolve(ctx context.Context, parsed []*fileConfig) map[string]mxResult {
	var domains []string
	for _, fc := range parsed {
		for _, d := range fc.domains {
			if e := fc.domain[d]; e != nil && e.mxRollup {
				name := strings.ToLower(d)
				if !slices.Contains(domains, name) {
					domains = append(domains, name)
				}
			}
		}
	}
	out := make(map[string]mxResult, len(domains))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, d := range domains {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := s.resolveSite(ctx, d)
			mu.Lock()
			out[d] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func (s *Shaping) resolveSite(ctx context.Context, domain string) mxResult {
	if s.opts.LookupMX == nil || s.opts.SiteName == nil {
		return mxResult{err: errors.New("no MX resolver configured (shaping.Options.LookupMX and SiteName)")}
	}
	hosts, err := s.opts.LookupMX(ctx, domain)
	if errors.Is(err, ErrNullMX) {
		return mxResult{}
	}
	if err != nil {
		return mxResult{err: err}
	}
	hosts = normalizeHosts(hosts)
	if len(hosts) == 0 {
		return mxResult{}
	}
	return mxResult{hosts: hosts, site: s.opts.SiteName(hosts)}
}

func normalizeHosts(hosts []string) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
		if h != "" {
			out = append(out, h)
		}
	}
	return out
}

// mergeInto merges e into m[name] as KumoMTA's PartialEntry::merge_from.
func mergeInto(m map[string]*entry, name string, e *entry) {
	if old, ok := m[name]; ok {
		old.mergeFrom(e)
		return
	}
	m[name] = e.clone()
}

func (e *entry) clone() *entry {
	c := *e
	c.params = e.params.clone()
	c.automation = slices.Clone(e.automation)
	c.sources = cloneSources(e.sources)
	return &c
}

func cloneSources(m map[string]paramSet) map[string]paramSet {
	if m == nil {
		return nil
	}
	out := make(map[string]paramSet, len(m))
	for k, v := range m {
		out[k] = v.clone()
	}
	return out
}

func mergeSources(dst map[string]paramSet, src map[string]paramSet) map[string]paramSet {
	for k, v := range src {
		if dst == nil {
			dst = map[string]paramSet{}
		}
		if old, ok := dst[k]; ok {
			old.mergeFrom(v)
		} else {
			dst[k] = v.clone()
		}
	}
	return dst
}

// mergeFrom merges a later block over e. With replace_base the later
// block replaces the parameters, sources and automation rules; the
// mx_rollup and replace_base flags of the first block stay, as in KumoMTA.
func (e *entry) mergeFrom(o *entry) {
	if o.replaceBase {
		e.params = o.params.clone()
		e.automation = slices.Clone(o.automation)
		e.sources = cloneSources(o.sources)
		return
	}
	e.params.mergeFrom(o.params)
	e.sources = mergeSources(e.sources, o.sources)
	e.automation = append(e.automation, o.automation...)
}

func (p *providerEntry) clone() *providerEntry {
	c := *p
	c.params = p.params.clone()
	c.matches = slices.Clone(p.matches)
	c.automation = slices.Clone(p.automation)
	c.sources = cloneSources(p.sources)
	return &c
}

// mergeFrom merges a later provider block over p, as KumoMTA's
// ProviderEntry::merge_from: match lists and rules append; replace_base
// replaces the connection limit, message rate, matches, parameters,
// sources and rules. (KumoMTA's merge forgets provider_max_message_rate,
// keeping the first block's; here a later block's value wins, as for
// provider_connection_limit.)
func (p *providerEntry) mergeFrom(o *providerEntry) {
	if o.replaceBase {
		p.connLimit = o.connLimit
		p.maxMessageRate = o.maxMessageRate
		p.matches = slices.Clone(o.matches)
		p.params = o.params.clone()
		p.sources = cloneSources(o.sources)
		p.automation = slices.Clone(o.automation)
		return
	}
	if o.connLimit != nil {
		p.connLimit = o.connLimit
	}
	if o.maxMessageRate != "" {
		p.maxMessageRate = o.maxMessageRate
	}
	p.params.mergeFrom(o.params)
	p.sources = mergeSources(p.sources, o.sources)
	p.matches = append(p.matches, o.matches...)
	p.automation = append(p.automation, o.automation...)
}

// applyImplied adds what a matching provider implies to target: its
// provider_name, its provider_connection_limit and
// provider_max_message_rate as named additional limits scoped to the
// source, and a provider source's provider_source_selection_rate.
func (p *providerEntry) applyImplied(source string, target paramSet) {
	implied := paramSet{"provider_name": p.name}
	prefix := "shaping-provider-" + p.name + "-" + source
	if p.connLimit != nil {
		implied["additional_connection_limits"] = map[string]LimitSpec{prefix + "-limit": *p.connLimit}
	}
	if p.maxMessageRate != "" {
		implied["additional_message_rate_throttles"] = map[string]string{prefix + "-rate": p.maxMessageRate}
	}
	if r, ok := target["provider_source_selection_rate"]; ok {
		delete(target, "provider_source_selection_rate")
		implied["additional_source_selection_rates"] = map[string]string{prefix + "-selection-rate": r.(string)}
	}
	target.mergeFrom(implied)
}

// matchesHosts reports whether the provider matches domain, whose MX
// hosts are hosts (nil when they could not be found), as KumoMTA's
// ProviderEntry::domain_matches: any DomainSuffix rule matching the
// domain, or else every MX host matching some MXSuffix or HostName rule.
func (p *providerEntry) matchesHosts(domain string, hosts []string) bool {
	for _, m := range p.matches {
		if m.Kind == "DomainSuffix" && strings.HasSuffix(strings.TrimSuffix(domain, "."), m.Value) {
			return true
		}
	}
	if len(hosts) == 0 {
		return false
	}
	for _, h := range hosts {
		matched := false
		for _, m := range p.matches {
			if m.Kind == "MXSuffix" && strings.HasSuffix(h, m.Value) || m.Kind == "HostName" && h == m.Value {
				matched = true
				break
			}
		}
		if !matched {
			return false
		}
	}
	return true
}

func (p *providerEntry) needsMX() bool {
	for _, m := range p.matches {
		if m.Kind != "DomainSuffix" {
			return true
		}
	}
	return false
}

// isDomainName reports whether s can be a DNS name: provider rules apply
// only to those (KumoMTA skips them for names such as the TSA daemon's
// "http://127.0.0.1:8008.tsa.kumomta").
func isDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}
