package shaping

import (
	"context"
	"strings"
	"time"
)

type pathKey struct{ source, site, domain string }

// resolved is a cached resolution of one path.
type resolved struct {
	cfg     PathConfig
	rules   []boundRule
	epoch   uint64    // automation epoch the config reflects
	expires time.Time // when provider matches must be looked up again
}

// boundRule is a rule that applies to a path, with its scope: rules from
// "default" and from mx_rollup blocks act on the site, others on the
// domain (KumoMTA's was_rollup).
type boundRule struct {
	rule   *Rule
	rollup bool
}

type providerMatch struct {
	provs   []*providerEntry
	expires time.Time
}

// PathConfig returns the effective configuration of the path (source,
// site, domain), merged in KumoMTA's order: the "default" block, matching
// provider blocks (file order), their source blocks, the mx_rollup block
// of site, the mx_rollup=false block of domain, the site block's source
// block, the domain block's source block. Automation overrides in force
// apply after the source block of their scope, and an active Suspend sets
// Suspended. Results are cached.
func (s *Shaping) PathConfig(ctx context.Context, source, site, domain string) (PathConfig, error) {
	r := s.lookup(ctx, source, site, strings.ToLower(domain))
	return r.cfg, nil
}

// lookup returns the cached resolution of a path, resolving it again when
// automation state changed or provider matches expired.
func (s *Shaping) lookup(ctx context.Context, source, site, domain string) *resolved {
	now := s.now()
	epoch := s.auto.current(now)
	k := pathKey{source, site, domain}
	s.cacheMu.RLock()
	r := s.cache[k]
	s.cacheMu.RUnlock()
	if r != nil && r.epoch == epoch && now.Before(r.expires) {
		return r
	}
	r = s.resolve(ctx, k, now, epoch)
	s.cacheMu.Lock()
	max := s.opts.MaxCacheEntries
	if max <= 0 {
		max = 100000
	}
	if len(s.cache) >= max {
		clear(s.cache)
	}
	s.cache[k] = r
	s.cacheMu.Unlock()
	return r
}

func (s *Shaping) resolve(ctx context.Context, k pathKey, now time.Time, epoch uint64) *resolved {
	r := &resolved{epoch: epoch, expires: now.Add(24 * time.Hour)}
	p := paramSet{}
	mergeEntry := func(e *entry) {
		if e.replaceBase {
			p = e.params.clone()
		} else {
			p.mergeFrom(e.params)
		}
	}
	if def := s.byDomain["default"]; def != nil {
		mergeEntry(def)
		for _, rule := range def.automation {
			r.rules = append(r.rules, boundRule{rule, true})
		}
	}
	if isDomainName(k.domain) {
		provs, exp := s.matchingProviders(ctx, k.domain, now)
		if exp.Before(r.expires) {
			r.expires = exp
		}
		for _, pr := range provs {
			p.mergeFrom(pr.params)
			pr.applyImplied(k.source, p)
			for _, rule := range pr.automation {
				r.rules = append(r.rules, boundRule{rule, false})
			}
		}
		for _, pr := range provs {
			if src, ok := pr.sources[k.source]; ok {
				p.mergeFrom(src)
				pr.applyImplied(k.source, p)
			}
		}
	}
	siteEntry := s.bySite[k.site]
	domainEntry := s.byDomain[k.domain]
	if k.domain == "default" {
		domainEntry = nil
	}
	if siteEntry != nil {
		mergeEntry(siteEntry)
		for _, rule := range siteEntry.automation {
			r.rules = append(r.rules, boundRule{rule, true})
		}
	}
	if domainEntry != nil {
		mergeEntry(domainEntry)
		for _, rule := range domainEntry.automation {
			r.rules = append(r.rules, boundRule{rule, false})
		}
	}
	if siteEntry != nil {
		if src, ok := siteEntry.sources[k.source]; ok {
			p.mergeFrom(src)
		}
	}
	suspended := s.auto.overlay(k, p, true)
	if domainEntry != nil {
		if src, ok := domainEntry.sources[k.source]; ok {
			p.mergeFrom(src)
		}
	}
	s.auto.overlay(k, p, false)

	r.cfg = Default()
	p.apply(&r.cfg)
	r.cfg.Suspended = suspended
	return r
}

// matchingProviders returns the provider blocks that match domain, in
// file order, and when to look again.
func (s *Shaping) matchingProviders(ctx context.Context, domain string, now time.Time) ([]*providerEntry, time.Time) {
	if len(s.providers) == 0 {
		return nil, now.Add(24 * time.Hour)
	}
	s.mxMu.Lock()
	m := s.mxCache[domain]
	s.mxMu.Unlock()
	if m != nil && now.Before(m.expires) {
		return m.provs, m.expires
	}
	ttl := s.opts.MXCacheTTL
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	var hosts []string
	needMX := false
	for _, p := range s.providers {
		needMX = needMX || p.needsMX()
	}
	if needMX && s.opts.LookupMX != nil {
		h, err := s.opts.LookupMX(ctx, domain)
		if err != nil {
			// As KumoMTA: a domain that does not resolve matches no
			// MX-based provider rule (it may be routed by other means).
			s.log.Debug("shaping: MX lookup for provider matching failed", "domain", domain, "err", err)
			ttl = min(ttl, time.Minute)
		}
		hosts = normalizeHosts(h)
	}
	m = &providerMatch{expires: now.Add(ttl)}
	for _, p := range s.providers {
		if p.matchesHosts(domain, hosts) {
			m.provs = append(m.provs, p)
		}
	}
	s.mxMu.Lock()
	if len(s.mxCache) >= 100000 {
		clear(s.mxCache)
	}
	s.mxCache[domain] = m
	s.mxMu.Unlock()
	return m.provs, m.expires
}
