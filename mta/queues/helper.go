package queues

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/mtakit/mtakit/mta"
)

// MetaAuthzID is the meta key require_authz checks: the SMTP AUTH
// identity, as KumoMTA names it.
const MetaAuthzID = "authz_id"

// Resolved is the merged configuration for one (domain, tenant, campaign).
type Resolved struct {
	Params
	// Matched reports whether any block applied (default, domain,
	// tenant, domain tenant or campaign).
	Matched bool
}

// Resolve merges the blocks that apply to a destination domain, tenant
// and campaign, in the helper's order, later ones overriding earlier ones
// key by key:
//
//  1. [queue.default]
//  2. [queue."DOMAIN"] (or the closest "*.parent" wildcard block)
//  3. [tenant."TENANT"]
//  4. [queue."DOMAIN"."TENANT"]
//  5. [queue."DOMAIN"."TENANT"."CAMPAIGN"]
//
// As in KumoMTA a tenant block overrides a domain block, and
// [tenant.X.campaigns.Y] blocks take no part.
func (c *Config) Resolve(domain, tenant, campaign string) Resolved {
	var r Resolved
	apply := func(p *Params) {
		r.Matched = true
		r.Params.overlay(p)
	}
	if d := c.Queues["default"]; d != nil {
		apply(&d.Params)
	}
	d := c.lookupDomain(domain)
	if d != nil {
		apply(&d.Params)
	}
	if t := c.Tenants[tenant]; t != nil && tenant != "" {
		apply(&t.Params)
	}
	if d != nil && tenant != "" {
		if dt := d.Tenants[tenant]; dt != nil {
			apply(&dt.Params)
			if cp := dt.Campaigns[campaign]; cp != nil && campaign != "" {
				apply(cp)
			}
		}
	}
	return r
}

// lookupDomain finds the block of a domain: its own, else the closest
// "*.parent" wildcard block.
func (c *Config) lookupDomain(domain string) *Domain {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return nil
	}
	if d := c.Queues[domain]; d != nil && domain != "default" {
		return d
	}
	for rest := domain; ; {
		_, parent, ok := strings.Cut(rest, ".")
		if !ok || parent == "" {
			return nil
		}
		if d := c.Queues["*."+parent]; d != nil {
			return d
		}
		rest = parent
	}
}

// overlay copies the keys set in o onto p.
func (p *Params) overlay(o *Params) {
	set := func(dst **string, v *string) {
		if v != nil {
			*dst = v
		}
	}
	if o.RetryInterval != nil {
		p.RetryInterval = o.RetryInterval
	}
	if o.MaxRetryInterval != nil {
		p.MaxRetryInterval = o.MaxRetryInterval
	}
	if o.MaxAge != nil {
		p.MaxAge = o.MaxAge
	}
	if o.EgressPool != nil {
		p.EgressPool, p.poolAt = o.EgressPool, o.poolAt
	}
	if o.Protocol != nil {
		p.Protocol = o.Protocol
	}
	if o.ReapInterval != nil {
		p.ReapInterval = o.ReapInterval
	}
	if o.RefreshInterval != nil {
		p.RefreshInterval = o.RefreshInterval
	}
	if o.TimerwheelTickInterval != nil {
		p.TimerwheelTickInterval = o.TimerwheelTickInterval
	}
	if o.ShrinkPolicy != nil {
		p.ShrinkPolicy = o.ShrinkPolicy
	}
	set(&p.MaxMessageRate, o.MaxMessageRate)
	set(&p.Strategy, o.Strategy)
	set(&p.RefreshStrategy, o.RefreshStrategy)
	set(&p.ProviderName, o.ProviderName)
	set(&p.OverallMaxMessageRate, o.OverallMaxMessageRate)
	set(&p.RoutingDomain, o.RoutingDomain)
}

// QueueConfig returns the settings the mta applies: retry_interval,
// max_retry_interval, max_age, egress_pool and protocol's smtp mx_list.
// Unset keys are left zero, which the mta reads as KumoMTA's defaults.
func (p Params) QueueConfig() mta.QueueConfig {
	var qc mta.QueueConfig
	if p.RetryInterval != nil {
		qc.RetryInterval = *p.RetryInterval
	}
	if p.MaxRetryInterval != nil {
		qc.MaxRetryInterval = *p.MaxRetryInterval
	}
	if p.MaxAge != nil {
		qc.MaxAge = *p.MaxAge
	}
	if p.EgressPool != nil {
		qc.EgressPool = *p.EgressPool
	}
	if p.MaxMessageRate != nil {
		qc.MaxMessageRate = *p.MaxMessageRate
	}
	if p.Protocol != nil {
		qc.Protocol.MXList = slices.Clone(p.Protocol.MXList)
	}
	return qc
}

// Apply is the helper's queue_helper:apply(msg), for a MessageReceived
// hook:
//
//   - the campaign header's first value, when present, becomes the
//     campaign meta, and every campaign header is removed when
//     remove_campaign_header is set;
//   - the tenant header's first value, else default_tenant, is the
//     tenant; every tenant header is removed when remove_tenant_header is
//     set. A tenant without a [tenant] block is refused with "500 tenant
//     'X' specified by 'H' header is not defined in your queue config"
//     (or "... by default_tenant option"), and a tenant with
//     require_authz needs an authz_id meta value in its list;
//   - the tenant is set as the tenant meta;
//   - a routing_domain resolved for the first recipient's domain, the
//     tenant and campaign is set as the routing_domain meta.
//
// scheduling_header is not applied (see Config.SchedulingHeader).
func (c *Config) Apply(msg *mta.Message) error {
	if c.CampaignHeader != "" {
		if v, ok := msg.Header(c.CampaignHeader); ok {
			msg.SetMeta(mta.MetaCampaign, v)
			if c.RemoveCampaignHeader {
				msg.RemoveHeader(c.CampaignHeader)
			}
		}
	}
	var tenant, source string
	haveTenant := false
	if c.TenantHeader != "" {
		if v, ok := msg.Header(c.TenantHeader); ok {
			tenant, source, haveTenant = v, fmt.Sprintf("'%s' header", c.TenantHeader), true
			if c.RemoveTenantHeader {
				msg.RemoveHeader(c.TenantHeader)
			}
		}
	}
	if !haveTenant && c.DefaultTenant != "" {
		tenant, source, haveTenant = c.DefaultTenant, "default_tenant option", true
	}
	if haveTenant {
		t := c.Tenants[tenant]
		if t == nil {
			return mta.Reject(500, fmt.Sprintf("tenant '%s' specified by %s is not defined in your queue config", tenant, source))
		}
		if t.RequireAuthz != nil {
			id := msg.MetaString(MetaAuthzID)
			if id == "" {
				return mta.Reject(500, fmt.Sprintf("tenant '%s' requires SMTP AUTH", tenant))
			}
			if !slices.Contains(t.RequireAuthz, id) {
				return mta.Reject(500, fmt.Sprintf("authz_id '%s' is not authorized to send as tenant '%s'", id, tenant))
			}
		}
		msg.SetMeta(mta.MetaTenant, tenant)
	}
	if rcpts := msg.Recipients(); len(rcpts) > 0 {
		domain := rcpts[0][strings.LastIndexByte(rcpts[0], '@')+1:]
		r := c.Resolve(domain, msg.MetaString(mta.MetaTenant), msg.MetaString(mta.MetaCampaign))
		if r.RoutingDomain != nil {
			msg.SetMeta(mta.MetaRoutingDomain, *r.RoutingDomain)
		}
	}
	return nil
}

// QueueConfig is a mta.Policy QueueConfig hook: the resolved settings of
// the queue's domain, tenant and campaign (see Resolve and
// Params.QueueConfig).
func (c *Config) QueueConfig(queue, campaign, tenant, domain, routingDomain string) (mta.QueueConfig, error) {
	r := c.Resolve(domain, tenant, campaign)
	return r.QueueConfig(), nil
}

// Helper holds the current Config for the mta.Policy hooks, so that a
// reloaded configuration can replace it while the server runs (Store).
// The zero Helper has an empty Config.
type Helper struct {
	cfg atomic.Pointer[Config]
}

// NewHelper returns a Helper using cfg.
func NewHelper(cfg *Config) *Helper {
	h := &Helper{}
	h.Store(cfg)
	return h
}

// Store replaces the configuration; messages received and queues
// configured afterwards use it. nil means an empty Config.
func (h *Helper) Store(cfg *Config) {
	if cfg == nil {
		cfg = &Config{}
	}
	h.cfg.Store(cfg)
}

// Config returns the current configuration.
func (h *Helper) Config() *Config {
	if c := h.cfg.Load(); c != nil {
		return c
	}
	return &Config{}
}

// Policy returns base with the helper's hooks: MessageReceived runs Apply,
// then base's MessageReceived (if any), so that a policy that signs with
// DKIM sees the headers already removed; QueueConfig returns the
// helper's resolution, or base's QueueConfig (if any) for a queue that no
// block of the configuration matches.
func (h *Helper) Policy(base mta.Policy) mta.Policy {
	next := base.MessageReceived
	fallback := base.QueueConfig
	p := base
	p.MessageReceived = func(ctx context.Context, msg *mta.Message) error {
		if err := h.Config().Apply(msg); err != nil {
			return err
		}
		if next != nil {
			return next(ctx, msg)
		}
		return nil
	}
	p.QueueConfig = func(queue, campaign, tenant, domain, routingDomain string) (mta.QueueConfig, error) {
		r := h.Config().Resolve(domain, tenant, campaign)
		if !r.Matched && fallback != nil {
			return fallback(queue, campaign, tenant, domain, routingDomain)
		}
		return r.QueueConfig(), nil
	}
	return p
}
