// Package luapolicy runs a KumoMTA init.lua policy with gopher-lua and
// implements mtakit's interfaces from it.
//
// [Load] evaluates init.lua and its init event and returns a [Policy]:
//
//   - the configuration made by the init event: spools (kumo.define_spool,
//     see [Policy.Spools] and [Policy.OpenSpools]), local logs
//     (kumo.configure_local_logs, [Policy.LogConfig]), the bounce
//     classifier (kumo.configure_bounce_classifier, [Policy.Classifier]),
//     ESMTP listeners (kumo.start_esmtp_listener, [Policy.ESMTPListeners],
//     each a listener.Config), HTTP listeners (kumo.start_http_listener,
//     [Policy.HTTPListeners]; serve them with mta/httpapi.Listen, as
//     mtakitd -policy does) and the DNS resolver
//     (kumo.dns.configure_resolver, [Policy.ResolverOptions]);
//   - the event handlers as Go hooks: [Policy.MTAPolicy] (MessageReceived
//     runs smtp_server_message_received or, for reception_protocol "HTTP",
//     http_message_generated; QueueConfig runs get_queue_config),
//     [Policy.DomainLookup] (get_listener_domain), [Policy.Shaper]
//     (get_egress_path_config), [Policy.EgressPools] (get_egress_pool
//     and get_egress_source) and [Policy.ListenerHooks], the listener's
//     session hooks (listener.Hooks), which fire
//     smtp_server_connection_accepted(conn_meta) before the banner,
//     smtp_server_ehlo(domain, conn_meta, extensions) for HELO/EHLO (a
//     returned list replaces the extensions advertised),
//     smtp_server_auth_plain(authz, authc, password, conn_meta) -> bool
//     for AUTH PLAIN (offered only after STARTTLS; on success authn_id and
//     authz_id are set in conn_meta), smtp_server_mail_from(sender,
//     conn_meta) and smtp_server_mail_rcpt_to(recipient, conn_meta)
//     (address objects). kumo.reject(code, text) in any of them answers
//     that command (at connect the connection is then closed); any other
//     error a handler raises answers a transient 451 (454 for AUTH) and
//     is logged. conn_meta:get_meta/set_meta read and write the
//     connection meta (received_from, received_via, hostname,
//     reception_protocol, ehlo_domain, tls_cipher, tls_protocol_version,
//     authn_id, authz_id, the listener's meta option and whatever
//     handlers set), which is copied into the meta of every message
//     received on the connection. get_listener_domain receives the
//     session's conn_meta too.
//
// A program can take any one piece into a server built in Go, or let
// [Policy.ServerOptions] fill an mta.Options, or [Policy.Start] open the
// spools and logs and start the server and its listeners.
//
// [LoadLive] returns a [Live] policy whose hooks follow [Live.Reload]:
// new work uses the newly loaded policy (with fresh memo caches, like
// KumoMTA's configuration epochs) while running calls finish with the old
// one; a policy that fails to load is reported and the running one kept.
// [Live.Watch] reloads when init.lua or a file it read changes; mtakitd
// also reloads on SIGHUP. Spools, logs and listeners are set up once and
// are not changed by a reload.
//
// # Concurrency and caching
//
// Lua states are not goroutine safe. A Policy keeps a pool of states (at
// most Options.States), each of which has evaluated init.lua; a hook takes
// a state, runs the handler and returns it. Only the first state runs the
// init event. Data files read by the policy-extras helpers are parsed once
// per Policy and shared by all states. As in KumoMTA, the results of the
// pure lookups are memoized per argument tuple: get_queue_config for the
// queue config's refresh_interval (default 1 minute), get_egress_path_config
// for the path's refresh_interval (default 60 s), get_egress_source and
// get_egress_pool for their ttl (default 60 s). get_listener_domain, whose
// handler may depend on conn_meta, is cached by the listener per session
// (as KumoMTA does; 60 s per (domain, listener) for calls outside a
// session).
// kumo.memoize caches per state. DKIM signers built by kumo.dkim.* are
// cached by their parameters for their ttl (default 300 s).
//
// # Errors
//
// Errors name the file and line: Lua syntax and runtime errors, reading an
// unknown kumo function (the kumo, kumo.dkim, kumo.dns and kumo.serde
// tables and the message object reject unknown names), an unknown
// parameter (every kumo.make_* and configure function rejects keys it does
// not know, as KumoMTA's deny_unknown_fields does) or a bad value (a
// duration such as "5 minits", a size, a throttle, an enum variant).
// Errors in a helper's data file name that file and the table. With
// Options.Check, Load collects every such error instead of stopping at the
// first, so "mtakitd check init.lua" can print them all.
//
// Parameters that KumoMTA defines and mtakit accepts without acting on
// them (rocks_params, enable_dane, ...) produce a warning ([Policy.Warnings]);
// parameters whose absence would change behaviour in a way a user relies
// on (per_record log templates, deferred_spool, Vault key sources,
// scheduled sending) are errors.
//
// # The kumo module
//
// kumo.on; define_spool; configure_local_logs; configure_bounce_classifier;
// start_esmtp_listener (listen, hostname, banner, relay_hosts,
// max_message_size, max_recipients_per_message,
// max_messages_per_connection, max_connections, client_timeout,
// data_processing_timeout, line_length_hard_limit, batch_handling,
// trace_headers, tls_certificate / tls_private_key, meta);
// start_http_listener;
// make_listener_domain; make_queue_config; make_egress_source;
// make_egress_pool; make_egress_path; dns.configure_resolver;
// dkim.rsa_sha256_signer and dkim.ed25519_signer (key sources: a file name
// or { key_data = "..." }); reject; memoize; toml_load, toml_parse,
// toml_encode, json_load, json_parse, json_encode, json_encode_pretty
// (also under kumo.serde); log_debug, log_info, log_warn, log_error;
// invoke_get_egress_path_config; set_memory_hard_limit,
// set_memory_soft_limit, set_memory_low_thresh and their get_ forms.
// Durations are KumoMTA's ("5 minutes",
// "1h 30m", "90s", parsed by shaping.ParseDuration, or a number of
// seconds), sizes accept "20MiB", "10mb" or "1_000_000", throttles are
// ThrottleSpecs ("100/s", "10/5min").
//
// The message object has id, sender, recipient, recipient_list,
// from_header, get_meta, set_meta, get_data, set_data,
// get_first_named_header_value, get_all_named_header_values,
// get_all_headers, prepend_header, append_header, remove_all_named_headers,
// remove_x_headers, import_x_headers, import_scheduling_header, dkim_sign,
// check_fix_conformance and queue_name, on top of mta.Message.
//
// # policy-extras
//
// require 'policy-extras.NAME' gives Go implementations of KumoMTA's
// helpers that read the same files with the Go package that owns each
// format: sources (egress.LoadSources; registers get_egress_source and
// get_egress_pool), queue (mta/queues: setup, setup_with_options,
// helper:apply(msg), helper:resolve_config; registers get_queue_config),
// shaping (setup and setup_with_automation; shaping.Load with KumoMTA's
// community shaping.toml first unless no_default_files, embedded in
// package shaping), listener_domains (listener_domains.toml or .json with
// per-listener tables and wildcards), dkim_sign (dkim_data.toml through
// package dkim), policy_utils, and log_hooks (new_json: each log record is
// POSTed as JSON to the URL by package mta/loghooks, see
// [Policy.LogHooks] and [Policy.OpenLogHooks]; new with a Lua
// constructor and new_disposition_hook are accepted with a warning and do
// nothing). When a helper's handler is the only
// handler of its event, the hooks call the Go implementation directly,
// without Lua: the Shaper is then the shaping package's *shaping.Shaping,
// with its automation rules, and the egress pools are those of
// egress.LoadSources.
//
// kumo.make_queue_config, make_egress_source and make_egress_path are
// checked by the same packages: the parameter table is handed to the
// loader as the equivalent TOML block, so each key has one
// implementation. Constructed values are cached by their parameters.
//
// # Deviations from KumoMTA
//
//   - Both spool kinds, LocalDisk and RocksDB, are served by mtakit's
//     badger spool at the given path; when data and meta name the same
//     path, one badger database holds both (badgerspool.OpenPair), which
//     halves the syncs per message. "flush" is implied: a store is durable
//     when it returns.
//   - Relative data file names given to helpers and kumo.*_load are
//     resolved against the directory of init.lua (KumoMTA uses the working
//     directory), so a policy directory is self-contained. Spool and log
//     directories are used as written.
//   - A listener without tls_certificate offers STARTTLS with an in-memory
//     self-signed certificate, as KumoMTA generates one.
//   - Session events not fired: smtp_server_data,
//     smtp_server_rewrite_response, smtp_server_split_transaction and
//     smtp_server_get_dynamic_parameters (a handler gets a warning). AUTH
//     offers PLAIN only, as KumoMTA does. In
//     smtp_server_message_received, conn_meta reads and writes the
//     message's meta (which starts as a copy of the connection's), not
//     the connection's. A 421 from a handler after the greeting does not
//     close the connection.
//   - mta.Options.EgressPools is a fixed map: EgressPools covers the pools
//     the helpers know at load time; call AddPoolName for pools that only
//     a custom get_queue_config names.
//   - Traffic Shaping Automation: the automation rules of the shaping
//     files are applied in process by package shaping; the TSA daemon's
//     publish and subscribe URLs are accepted with a warning and not
//     contacted, and shaper.setup_publish() does nothing.
//   - A reload (Live) replaces hooks and lookups, not spools, logs,
//     listeners or the set of egress pool names.
//   - log_hooks:new_json queues records in mta/loghooks' own durable queue
//     (beside the data spool) rather than in the message spool; a failed
//     POST is retried with queue_config's backoff. The hook's
//     log_parameters headers and meta are added to those of every log
//     sink.
//   - msg:import_scheduling_header refuses a message that has the header
//     (550 5.7.0): mtakit has no per-message scheduling yet. (The queue
//     helper's scheduling_header is parsed by mta/queues and not applied.)
//   - configure_bounce_classifier: a file under /opt/kumomta/share that
//     is not installed is replaced by mtakit's built-in rules, with a
//     warning.
//   - configure_local_logs accepts sync_reception = true, an mtakit
//     extension: a message's Reception record is fsynced before its 250
//     (logs.LocalConfig.SyncReception; see package mta).
//   - kumo.set_memory_hard_limit, set_memory_soft_limit and
//     set_memory_low_thresh (and the get_ functions) configure mta's
//     memory monitor (mta.Options.MemoryHardLimit and friends) when the
//     server starts, and again at a Live reload that sets them; calls
//     after start-up outside a reload have no effect. The get_ functions
//     return the default the monitor uses where the policy sets none.
//     Policy.PurgeCache (registered by Start) empties the memo caches
//     when memory runs short.
package luapolicy
