package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

// MTASTSMode is the mode of an MTA-STS policy (RFC 8461 section 5).
type MTASTSMode string

// MTA-STS policy modes.
const (
	// MTASTSEnforce: deliver only to MX hosts that match the policy, over
	// TLS with a verified certificate (enable_tls becomes Required).
	MTASTSEnforce MTASTSMode = "enforce"
	// MTASTSTesting: the policy is only reported on; as KumoMTA,
	// enable_tls becomes OpportunisticInsecure.
	MTASTSTesting MTASTSMode = "testing"
	// MTASTSNone: the domain withdrew its policy; enable_tls is unchanged.
	MTASTSNone MTASTSMode = "none"
)

// Limits of MTA-STS policy fetching.
const (
	// MTASTSMaxPolicySize bounds the policy body (RFC 8461 section 3.3
	// suggests 64 KiB).
	MTASTSMaxPolicySize = 64 << 10
	// MTASTSMaxAge is the largest max_age honoured (RFC 8461 section 3.2:
	// 31557600 seconds, about a year).
	MTASTSMaxAge = 31557600 * time.Second
	// DefaultMTASTSFetchTimeout bounds a policy fetch (KumoMTA's 20 s).
	DefaultMTASTSFetchTimeout = 20 * time.Second
	// DefaultMTASTSFailureTTL is how long a failed policy fetch is
	// remembered before the domain is tried again.
	DefaultMTASTSFailureTTL = 5 * time.Minute
	// DefaultMTASTSCacheSize bounds the number of cached domains.
	DefaultMTASTSCacheSize = 64 * 1024
)

// MTASTSPolicy is a parsed MTA-STS policy (RFC 8461 section 3.2).
type MTASTSPolicy struct {
	Mode MTASTSMode
	// MX are the permitted MX host patterns, lower case: a host name, or
	// "*.suffix" matching exactly one label in front of suffix.
	MX []string
	// MaxAge is how long the policy may be cached (max_age), capped at
	// MTASTSMaxAge.
	MaxAge time.Duration
	// ID is the id of the _mta-sts TXT record the policy was fetched
	// under; empty for a policy parsed on its own.
	ID string
}

// ParseMTASTSPolicy parses a policy body: "key: value" lines separated by
// LF or CRLF, with version "STSv1", mode, max_age and (except in mode
// "none") at least one mx. Unknown keys are ignored, as RFC 8461 section
// 3.2 requires; a repeated version, mode or max_age is an error.
func ParseMTASTSPolicy(text string) (*MTASTSPolicy, error) {
	p := &MTASTSPolicy{}
	seen := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("mta-sts policy: line %q is not key: value", line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if key != "mx" {
			if seen[key] && (key == "version" || key == "mode" || key == "max_age") {
				return nil, fmt.Errorf("mta-sts policy: %s given more than once", key)
			}
			seen[key] = true
		}
		switch key {
		case "version":
			if value != "STSv1" {
				return nil, fmt.Errorf("mta-sts policy: unsupported version %q", value)
			}
		case "mode":
			switch m := MTASTSMode(value); m {
			case MTASTSEnforce, MTASTSTesting, MTASTSNone:
				p.Mode = m
			default:
				return nil, fmt.Errorf("mta-sts policy: invalid mode %q", value)
			}
		case "max_age":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil || len(value) > 10 {
				return nil, fmt.Errorf("mta-sts policy: invalid max_age %q", value)
			}
			p.MaxAge = time.Duration(min(n, uint64(MTASTSMaxAge/time.Second))) * time.Second
		case "mx":
			// Check the pattern as it will be matched: lower-casing turns
			// bytes that are not UTF-8 into U+FFFD, which no host name has.
			pattern := strings.ToLower(strings.TrimSuffix(value, "."))
			if err := checkMXPattern(pattern); err != nil {
				return nil, fmt.Errorf("mta-sts policy: mx %q: %w", value, err)
			}
			p.MX = append(p.MX, pattern)
		}
	}
	switch {
	case !seen["version"]:
		return nil, errors.New("mta-sts policy: missing version")
	case !seen["mode"]:
		return nil, errors.New("mta-sts policy: missing mode")
	case !seen["max_age"]:
		return nil, errors.New("mta-sts policy: missing max_age")
	case len(p.MX) == 0 && p.Mode != MTASTSNone:
		return nil, errors.New("mta-sts policy: missing mx")
	}
	return p, nil
}

// checkMXPattern accepts a host name, optionally with a leading "*." (RFC
// 8461 section 3.2: a wildcard stands for the left-most label only).
func checkMXPattern(s string) error {
	name := strings.TrimPrefix(s, "*.")
	if name == "" || strings.Contains(name, "*") {
		return errors.New("not a host name or *.suffix pattern")
	}
	if _, err := fqdn(name); err != nil {
		return errors.New("not a host name or *.suffix pattern")
	}
	return nil
}

// Permits reports whether the policy allows delivery to the MX host
// (case-insensitive, trailing dot ignored). A "*.example.com" pattern
// matches "mx.example.com" but neither "example.com" nor
// "a.b.example.com" (RFC 8461 section 4.1).
func (p *MTASTSPolicy) Permits(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if suffix, ok := strings.CutPrefix(pat, "*"); ok {
			if lhs, ok := strings.CutSuffix(host, suffix); ok && lhs != "" && !strings.Contains(lhs, ".") {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// TXTResolver looks up TXT records; *Resolver implements it. A name
// without TXT records gives no records and no error.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// MTASTSOptions configures an MTASTS policy source.
type MTASTSOptions struct {
	// Resolver looks up the _mta-sts TXT records. Required.
	Resolver TXTResolver
	// HTTPClient fetches policies. Nil means a client with
	// DefaultMTASTSFetchTimeout and the system roots. Redirects are never
	// followed (RFC 8461 section 3.3), whatever the client's
	// CheckRedirect says. Tests point the client's transport at a local
	// HTTPS server.
	HTTPClient *http.Client
	// FailureTTL is how long a failed fetch is remembered; 0 means
	// DefaultMTASTSFailureTTL, negative disables.
	FailureTTL time.Duration
	// CacheSize bounds the cached domains; 0 means DefaultMTASTSCacheSize.
	CacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives Debug records of fetches and failures; nil discards.
	Logger *slog.Logger
}

// MTASTS discovers, fetches and caches MTA-STS policies (RFC 8461
// sections 3 and 5.1), as KumoMTA's mta-sts crate does: a policy is
// fetched from https://mta-sts.<domain>/.well-known/mta-sts.txt when the
// domain's _mta-sts TXT record is a valid STSv1 record, and cached for its
// max_age; while cached, the TXT record is checked on every use and the
// policy fetched again when its id changed. A failed fetch leaves a cached
// policy in force. It is safe for concurrent use.
type MTASTS struct {
	opts   MTASTSOptions
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	mu       sync.Mutex
	cache    map[string]*stsEntry
	inflight map[string]*stsFlight
}

type stsEntry struct {
	policy  *MTASTSPolicy // nil: the last fetch failed
	err     error
	expires time.Time
}

// NewMTASTS returns an MTA-STS policy source.
func NewMTASTS(opts MTASTSOptions) (*MTASTS, error) {
	if opts.Resolver == nil {
		return nil, errors.New("egress: MTASTSOptions.Resolver is required")
	}
	m := &MTASTS{opts: opts, now: opts.Now, log: opts.Logger,
		cache: map[string]*stsEntry{}, inflight: map[string]*stsFlight{}}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.opts.FailureTTL == 0 {
		m.opts.FailureTTL = DefaultMTASTSFailureTTL
	}
	if m.opts.CacheSize <= 0 {
		m.opts.CacheSize = DefaultMTASTSCacheSize
	}
	base := opts.HTTPClient
	if base == nil {
		base = &http.Client{Timeout: DefaultMTASTSFetchTimeout}
	}
	c := *base
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	m.client = &c
	return m, nil
}

// Policy returns the MTA-STS policy of domain. It returns nil and no
// error when the domain publishes none; an error when a policy is
// announced but cannot be had (callers then deliver as if there were
// none, RFC 8461 section 5.1). Concurrent calls for one domain share one
// refresh.
func (m *MTASTS) Policy(ctx context.Context, domain string) (*MTASTSPolicy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	m.mu.Lock()
	if f, busy := m.inflight[domain]; busy {
		m.mu.Unlock()
		select {
		case <-f.done:
			return f.policy, f.err
		case <-ctx.Done():
			return nil, fmt.Errorf("egress: mta-sts policy for %s: %w", domain, ctx.Err())
		}
	}
	e := m.cache[domain]
	if e != nil && !m.now().Before(e.expires) {
		delete(m.cache, domain)
		e = nil
	}
	f := &stsFlight{done: make(chan struct{})}
	m.inflight[domain] = f
	m.mu.Unlock()

	f.policy, f.err = m.refresh(ctx, domain, e)
	m.mu.Lock()
	delete(m.inflight, domain)
	m.mu.Unlock()
	close(f.done)
	return f.policy, f.err
}

type stsFlight struct {
	done   chan struct{}
	policy *MTASTSPolicy
	err    error
}

// refresh checks the TXT record and fetches the policy when needed; cur
// is the unexpired cache entry, if any.
func (m *MTASTS) refresh(ctx context.Context, domain string, cur *stsEntry) (*MTASTSPolicy, error) {
	if cur != nil && cur.policy == nil {
		return nil, cur.err // a recent failure: do not hammer the host
	}
	id, terr := m.lookupID(ctx, domain)
	if cur != nil && (terr != nil || id == "" || id == cur.policy.ID) {
		// RFC 8461 section 5.1: a removed or unreadable record does not
		// invalidate a cached policy; only a new id does.
		return cur.policy, nil
	}
	if terr != nil {
		return nil, terr
	}
	if id == "" {
		return nil, nil
	}
	p, err := m.fetch(ctx, domain)
	if err != nil {
		m.log.Debug("egress: mta-sts policy fetch failed", "domain", domain, "error", err)
		if cur != nil {
			return cur.policy, nil
		}
		if m.opts.FailureTTL > 0 && ctx.Err() == nil {
			m.store(domain, &stsEntry{err: err, expires: m.now().Add(m.opts.FailureTTL)})
		}
		return nil, err
	}
	p.ID = id
	m.store(domain, &stsEntry{policy: p, expires: m.now().Add(p.MaxAge)})
	m.log.Debug("egress: mta-sts policy fetched", "domain", domain, "mode", string(p.Mode), "id", id, "max_age", p.MaxAge)
	return p, nil
}

func (m *MTASTS) store(domain string, e *stsEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.cache) >= m.opts.CacheSize {
		now := m.now()
		for k, old := range m.cache {
			if !now.Before(old.expires) {
				delete(m.cache, k)
			}
		}
		for k := range m.cache { // still full: drop an arbitrary entry
			if len(m.cache) < m.opts.CacheSize {
				break
			}
			delete(m.cache, k)
		}
	}
	m.cache[domain] = e
}

// lookupID reads the _mta-sts TXT record (RFC 8461 section 3.1): of the
// records starting "v=STSv1;" exactly one must exist, with an id of 1 to
// 32 letters and digits. It returns "" when there is no usable record.
func (m *MTASTS) lookupID(ctx context.Context, domain string) (string, error) {
	txts, err := m.opts.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return "", fmt.Errorf("egress: mta-sts record of %s: %w", domain, err)
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1;") || t == "v=STSv1" {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return "", nil
	}
	id, ok := parseSTSRecord(recs[0])
	if !ok {
		return "", nil
	}
	return id, nil
}

// parseSTSRecord returns the id of an STSv1 TXT record.
func parseSTSRecord(rec string) (string, bool) {
	var id string
	for _, field := range strings.Split(rec, ";") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return "", false
		}
		if k == "id" {
			id = v
		}
	}
	if id == "" || len(id) > 32 {
		return "", false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return "", false
		}
	}
	return id, true
}

// fetch GETs and parses the policy (RFC 8461 section 3.3): only a 200
// with media type text/plain counts, redirects are not followed, the body
// is limited to MTASTSMaxPolicySize.
func (m *MTASTS) fetch(ctx context.Context, domain string) (*MTASTSPolicy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("egress: mta-sts policy %s: %w", url, err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("egress: mta-sts policy: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("egress: mta-sts policy: failed to GET %s: %s", url, resp.Status)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("egress: mta-sts policy %s: Content-Type must be text/plain, got %q", url, ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MTASTSMaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("egress: mta-sts policy %s: %w", url, err)
	}
	if len(body) > MTASTSMaxPolicySize {
		return nil, fmt.Errorf("egress: mta-sts policy %s: larger than %d bytes", url, MTASTSMaxPolicySize)
	}
	p, err := ParseMTASTSPolicy(string(body))
	if err != nil {
		return nil, fmt.Errorf("egress: %s: %w", url, err)
	}
	return p, nil
}

// MTASTSSource supplies the MTA-STS policy of a domain: nil and no error
// when it has none. *MTASTS implements it.
type MTASTSSource interface {
	Policy(ctx context.Context, domain string) (*MTASTSPolicy, error)
}

// applyMTASTS looks up the policy of the destination domain when the path
// enables MTA-STS. An enforce policy drops the MX hosts it does not
// permit, and fails the destination (451 4.4.4, as KumoMTA) when it
// permits none. A policy that cannot be had counts as none (RFC 8461
// section 5.1).
func (d *dialer) applyMTASTS(ctx context.Context) error {
	if !d.opts.Config.EnableMTASTS || d.opts.MTASTS == nil || d.opts.Domain == "" || strings.HasPrefix(d.opts.Domain, "[") {
		return nil
	}
	domain, _, _ := CutPort(d.opts.Domain)
	p, err := d.opts.MTASTS.Policy(ctx, domain)
	if err != nil {
		d.log.Debug("egress: no usable mta-sts policy", "domain", domain, "error", err)
		return nil
	}
	if p == nil || p.Mode == MTASTSNone {
		return nil
	}
	d.sts = p
	if p.Mode != MTASTSEnforce {
		return nil
	}
	var kept []MXHost
	var names []string
	for _, h := range d.opts.Hosts {
		names = append(names, strconv.Quote(strings.TrimSuffix(h.Name, ".")+"."))
		if p.Permits(h.Name) {
			kept = append(kept, h)
		}
	}
	if len(kept) == 0 {
		pats := make([]string, len(p.MX))
		for i, pat := range p.MX {
			pats[i] = strconv.Quote(pat)
		}
		return &ResponseError{
			Response: Response{Code: 451, Enhanced: "4.4.4", Text: fmt.Sprintf(
				"MTA-STS enforce policy for %s permits none of its MX hosts %s allowed mx patterns: %s "+
					"The destination is undeliverable until its MTA-STS policy is corrected.",
				domain, strings.Join(names, " "), strings.Join(pats, " "))},
			Err: ErrMTASTSNoPermittedHost,
		}
	}
	d.opts.Hosts = kept
	return nil
}

// ErrMTASTSNoPermittedHost is wrapped by the error of a Dial whose
// destination has an MTA-STS enforce policy that permits none of its MX
// hosts.
var ErrMTASTSNoPermittedHost = errors.New("mta-sts policy permits no MX host")

// stsModeWith is the MTA-STS mode that applies to a host with the given
// DANE outcome: none when DANE found usable records (DANE wins, as in
// KumoMTA).
func (d *dialer) stsModeWith(dane daneState) MTASTSMode {
	if d.sts == nil || dane.result == DANEOK {
		return ""
	}
	return d.sts.Mode
}

// hostMode is the effective enable_tls of a connection, decided as
// KumoMTA's dispatcher does: usable DANE records make it Required (with
// the certificate checked against them) and MTA-STS is not consulted;
// unusable ones make it RequiredInsecure. Then an MTA-STS enforce policy
// makes it Required, and a testing one OpportunisticInsecure unless DANE
// required STARTTLS.
func (d *dialer) hostMode(dane daneState) shaping.TLSMode {
	mode := d.mode
	switch dane.result {
	case DANEOK:
		return shaping.Required
	case DANEUnusable:
		mode = shaping.RequiredInsecure
	}
	switch d.stsModeWith(dane) {
	case MTASTSEnforce:
		mode = shaping.Required
	case MTASTSTesting:
		if dane.result != DANEUnusable {
			mode = shaping.OpportunisticInsecure
		}
	}
	return mode
}
