package shaping_test

import (
	"context"
	"log"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/shaping"
)

// How a queue engine uses the package: load the default file and a local
// override, resolving mx_rollup blocks with its own resolver; ask for the
// path configuration per message; pass every response to Observe; hold
// connections and messages to the path's limits through a Throttle.
func Example() {
	ctx := context.Background()
	res, err := egress.NewResolver(egress.ResolverOptions{})
	if err != nil {
		log.Fatal(err)
	}
	opts := shaping.Options{
		LookupMX: res.MXHostNames, // by preference, null MX as shaping.ErrNullMX
		SiteName: egress.SiteName,
		DNSFail:  shaping.Warn,
	}
	shaper, err := shaping.LoadPaths(ctx, opts, shaping.DefaultFilePath, "/opt/kumomta/etc/policy/custom-shaping.toml")
	if err != nil {
		log.Fatal(err) // file:line of every bad key or value
	}

	// Per message: the path's configuration (cached).
	plan, err := res.ResolveMX(ctx, "gmail.com")
	if err != nil {
		log.Fatal(err)
	}
	cfg, _ := shaper.PathConfig(ctx, "ip-1", plan.SiteName, "gmail.com")
	if cfg.Suspended {
		return // an automation rule suspended the path; try again later
	}

	// Limits: one slot of the connection limit per connection, and the
	// message rate per message.
	var th shaping.Throttle = shaping.NewLocalThrottle() // or redisthrottle.New
	lease, wait := th.Acquire(ctx, shaping.PathKey(shaping.KeyConnections, "ip-1", plan.SiteName),
		shaping.LimitSpec{Limit: cfg.ConnectionLimit, Local: cfg.ConnectionLimitLocal})
	if lease == nil {
		time.Sleep(wait) // or reschedule the ready queue
		return
	}
	defer lease.Release()
	if cfg.MaxMessageRate != "" {
		spec, _ := shaping.ParseThrottle(cfg.MaxMessageRate)
		if wait := th.Allow(ctx, shaping.PathKey(shaping.KeyMessageRate, "ip-1", plan.SiteName), spec, 1); wait > 0 {
			return // reschedule after wait
		}
	}

	// Every response goes through the automation rules.
	for _, a := range shaper.Observe(ctx, "ip-1", plan.SiteName, "gmail.com",
		shaping.Response{Code: 421, Enhanced: "4.7.0", Text: "Try again later"}) {
		switch a.Kind {
		case shaping.ActionSuspendTenant, shaping.ActionSuspendCampaign,
			shaping.ActionBounce, shaping.ActionBounceTenant, shaping.ActionBounceCampaign:
			// Apply to the scheduled queues of a.Domain until a.Expires.
		}
	}
}
