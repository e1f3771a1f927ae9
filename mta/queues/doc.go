// Package queues loads queues.toml, the data file of KumoMTA's
// policy-extras queue helper (assets/policy-extras/queue.lua), and turns it
// into mta.Policy hooks, so that a Go embedder routes tenants and
// campaigns from the same file a KumoMTA deployment uses, without Lua.
//
//	cfg, err := queues.Load("/opt/kumomta/etc/policy/queues.toml")
//	if err != nil { ... } // errors read "file:line: message"
//	h := queues.NewHelper(cfg)
//	opts.Policy = h.Policy(opts.Policy) // mta.Options
//	...
//	h.Store(newCfg) // after a reload
//
// # The file
//
// Top-level keys: tenant_header, remove_tenant_header, campaign_header,
// remove_campaign_header, default_tenant, scheduling_header, and the
// tables tenant and queue:
//
//   - [tenant."NAME"]: make_queue_config keys, require_authz (a list of
//     authz_id values), overall_max_message_rate, and
//     [tenant."NAME".campaigns."CAMPAIGN"] blocks.
//   - [queue."DOMAIN"]: make_queue_config keys, routing_domain and
//     overall_max_message_rate; any other key holding a table is a tenant,
//     [queue."DOMAIN"."TENANT"], whose table keys are campaigns,
//     [queue."DOMAIN"."TENANT"."CAMPAIGN"]. DOMAIN "default" applies to
//     every queue; "*.example.com" to subdomains without their own block.
//
// The make_queue_config keys are retry_interval, max_retry_interval,
// max_age, egress_pool, protocol, max_message_rate, reap_interval,
// refresh_interval, timerwheel_tick_interval, strategy, refresh_strategy,
// provider_name and shrink_policy. Durations are KumoMTA's: "10 hours",
// "17 mins", "1h 30m", or a number of seconds.
//
// Several files merge in order, later keys overriding earlier ones block
// by block. Unknown keys, values of the wrong type or out of range,
// invalid throttle specs and unsupported protocols are errors naming the
// file and line; Config.CheckPools reports egress_pool names that the
// sources.toml (egress.LoadSources) does not define, also by file and
// line.
//
// # What the hooks do
//
// Helper.Policy's MessageReceived runs Config.Apply (queue_helper:apply):
// the campaign header sets the campaign meta, the tenant header (else
// default_tenant) sets the tenant meta, each header is removed when
// configured, an undefined tenant is refused with 500, require_authz is
// checked against the authz_id meta, and a routing_domain resolved for the
// first recipient is set as routing_domain meta. The mta then queues the
// message as "campaign:tenant@domain!routing_domain".
//
// Its QueueConfig (get_queue_config) resolves default, domain, tenant,
// domain tenant and campaign blocks in that order (Config.Resolve) and
// returns an mta.QueueConfig with retry_interval, max_retry_interval,
// max_age, egress_pool and protocol = { smtp = { mx_list = [...] } }.
//
// # Differences from KumoMTA
//
//   - Applied by the mta: retry_interval, max_retry_interval, max_age,
//     egress_pool, max_message_rate and smtp mx_list. Parsed and
//     validated but not applied yet: reap_interval, refresh_interval,
//     timerwheel_tick_interval, strategy, refresh_strategy,
//     provider_name, shrink_policy, treat_mx_list_as_secure and the
//     helper's overall_max_message_rate (KumoMTA's
//     throttle_insert_ready_queue handler). Params keeps them for callers.
//   - scheduling_header is parsed but not applied: the header stays in
//     the message and the message is not scheduled.
//   - Protocols other than smtp (maildir_path, custom_lua, xfer, ...) are
//     load errors. An mx_list entry { name = ..., addr = ... } becomes
//     "[addr]"; its name is dropped.
//   - Header values are the first field's unfolded text; RFC 2047
//     encoded words are not decoded.
//   - KumoMTA's helper silently skips keys it cannot classify in some
//     places (a misspelt option inside a tenant table becomes a campaign);
//     here a non-table value under an unknown key is always an error.
//   - mtakit has no SMTP AUTH yet, so require_authz refuses every message
//     unless an earlier hook sets the authz_id meta (MetaAuthzID).
//   - The helper caches the files for a minute and reloads them; here
//     the embedder reloads and calls Helper.Store.
package queues
