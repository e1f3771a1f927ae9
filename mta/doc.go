// Package mta is mtakit's server: it composes a spool, listeners, a
// shaper, egress sources and policy hooks into a mail transfer agent.
//
// # Seams
//
// Each part is an interface a program may implement itself: spool.Spool
// (Options.DataSpool and MetaSpool; spool/badgerspool is the durable one),
// shaping.Shaper (Options.Shaper; shaping.Shaping loads shaping.toml),
// dkim.Signer (Options.Signer), egress.EgressSource and egress.Pool
// (Options.EgressPools), and the listener domains, listener.DomainLookup
// (listener.Config.Domains given to ListenSMTP: relay_to, log_oob,
// log_arf, as KumoMTA's get_listener_domain). Policy holds the hooks.
// Zero values are safe; two defaults protect production servers and
// surprise tests: a nil shaping.PathConfig.ProhibitedHosts includes
// loopback (see Example_deliverToLoopback) and a nil
// listener.Config.RelayHosts lets loopback clients relay.
//
// # A message's path
//
//  1. Reception. A listener (package listener) accepts an SMTP
//     transaction, or Server.Inject is called. Each recipient becomes one
//     message (KumoMTA's BifurcateAlways; BatchByDomain groups recipients
//     by domain). A Received header is added, then Policy.MessageReceived
//     runs (it may set meta such as tenant, campaign, queue and
//     routing_domain, or reject), then Options.Signer signs, then the
//     supplemental X-KumoRef trace header is added.
//  2. Spool. Data and meta are stored together (one commit on a
//     badgerspool pair, in parallel otherwise); the client gets its
//     "250 OK ids=..." only when both are durable. If either store fails,
//     both are removed and the client gets 451 4.3.0. The messages of one
//     transaction share one stored copy of the received content, each
//     keeping only the fields prepended for it (see body.go); the copy is
//     removed with the last of them. A Reception record
//     is logged; with a log sink that keeps Reception records durable
//     (logs.LocalConfig.SyncReception), the 250 also waits for them (see
//     Durable reception logging).
//  3. Scheduled queue. The message joins its queue, named as KumoMTA
//     names it ("campaign:tenant@domain!routing_domain", see QueueName),
//     due now. Policy.QueueConfig supplies retry_interval (20m),
//     max_retry_interval, max_age (7 days), egress_pool and protocol.
//  4. Dispatch. When due, the message's egress source is picked from its
//     pool (weighted round robin), its destination resolved (MX with
//     A/AAAA fallback, or the queue's mx_list), and it is appended to the
//     ready queue "source->site@smtp_client", where site is KumoMTA's
//     MX-rollup name: domains hosted on the same MX set share one queue
//     and one set of limits. A null MX or NXDOMAIN bounces; other DNS
//     failures are transient.
//  5. Delivery. Each ready queue runs up to connection_limit workers; each
//     opens an SMTP connection (egress.Dial: TLS per enable_tls,
//     prohibited_hosts and skip_hosts honoured) and sends messages until
//     max_deliveries_per_connection, idle_timeout or a broken connection,
//     paced by max_message_rate. Path configuration comes from the
//     Shaper for (source, site, domain).
//  6. Outcome, per recipient: 2xx logs Delivery; 5xx logs Bounce (and
//     sends a DSN when Options.DSN is set); 4xx and connection or DNS
//     failures log TransientFailure and the message is rescheduled after
//     retry_interval × 2^attempts (capped by max_retry_interval, with
//     KumoMTA's jitter), or logs Expiration when that would pass max_age.
//     The meta spool is updated before the in-memory state; a finished
//     message is removed from both spools.
//
// # Start-up, shutdown and lifecycle guarantees
//
// On start, New enumerates the meta spool and schedules every message
// with its due time and attempt count, so a crash never loses an
// acknowledged message; it may deliver one a second time if the crash came
// between the remote 250 and the removal (at-least-once delivery). Meta is
// spooled in a compact binary form with a version byte; the JSON meta of
// earlier releases is still read, so their spools recover (and are
// rewritten in the new form as messages are retried). Meta that cannot be
// decoded, or of a version this build does not know (written by a newer
// mtakit: there is no downgrade), is logged and left in the spool for a
// person;
// a message whose meta exists but whose data is missing (never
// acknowledged) is dropped with a warning when it is first due. In the
// background after start-up, bodies that no meta refers to (a crash
// between the data and the meta store of an unacknowledged reception)
// are removed; see reclaimOrphans for the conditions.
//
// Shutdown stops the listeners (transactions in progress finish and are
// acknowledged), then stops delivery: the scheduler releases nothing more
// and no worker takes another message from a ready queue, so only the
// attempts already in progress go on. Messages that were waiting, in the
// scheduled or a ready queue, keep their spooled state exactly (no
// attempt counted, no record logged) and are due again at the next start.
// If Shutdown's context expires, or on Close, attempts in progress are
// cut; an attempt cut after it began is logged as a TransientFailure and
// counted, one cut before it began is not.
//
// A ready queue exists while it has messages or workers; the last worker
// to leave an empty queue removes it. A worker counts itself out in the
// same critical section in which it finds the queue empty, so a message
// pushed concurrently always finds a worker. A ready queue that has work
// but finishes no attempt for Options.StallTimeout (default 10 minutes)
// is considered stalled: its sessions are cancelled and its waiting
// messages get a TransientFailure and go back to the scheduled queue, so
// max_age holds even against a peer that accepts and never answers
// (KumoMTA's issue 539). Messages waiting in a ready queue past their
// max_age expire there too.
//
// # Durable reception logging
//
// By default the log is written behind the mail: a Reception record
// reaches its segment file within the log's flush interval (1 s), so a
// crash can lose the records of the last second although their messages
// are safe in the spool. When the sink says it keeps Reception records
// durable (logs.Syncs; logs.LocalConfig.SyncReception, configure_local_logs
// sync_reception, mtakitd -log-sync-reception), a transaction's Reception
// records are logged after its messages are stored, then one
// logs.Sync(Reception) call waits until they are written and fsynced, and
// only then is the 250 sent and are the messages queued. Concurrent
// transactions share the log's fsync (group commit), as they share the
// spool's; the log's is a second, separate fsync after the spool's.
//
// If the records cannot be made durable (the sync fails, or a record
// could not even be encoded), the messages are removed from the spool, as
// after a failed store, and the client gets 451 4.3.0. The alternative,
// answering 250 and logging the error, would keep the mail too (it is
// spooled either way), but the mode exists to promise that every 250 has
// its record; a client's retry keeps that promise at the price of a
// duplicate record in the rare case where a record reached the disk and
// its fsync then failed. A log disk that keeps failing thus stops
// reception, as a full spool does, which is what an operator who chose
// the mode asked for.
//
// # Memory monitor
//
// Like KumoMTA's, the server samples the memory it is charged for every
// Options.MemoryCheckInterval (1 s) and compares it with three limits
// (Options.MemoryHardLimit, MemorySoftLimit, MemoryLowThresh; KumoMTA's
// kumo.set_memory_*): the hard limit defaults to the cgroup's memory.max,
// else physical memory; the soft limit to 75 % of it; the low threshold to
// 80 % of the soft limit. Usage is the process's resident anonymous
// memory (see MemoryStatus). Above the low threshold the state is logged;
// above the soft limit the server sheds load until usage falls below it:
// new SMTP connections get KumoMTA's "421 4.3.2 <host> load shedding.
// Try later", MAIL FROM in open sessions 451 4.3.2, Inject
// ErrLoadShedding, the HTTP API 503 on inject and check-liveness (Live).
// On crossing the soft limit, and at most every 30 s while above, the
// caches registered with RegisterCache (DNS, shaping, MTA-STS failures,
// DKIM signers and keys, luapolicy's memoized lookups) are emptied and
// debug.FreeOSMemory returns free memory to the system. Each change of state is logged once; the
// state, usage, limits and counts of refusals and purged entries are in
// MemoryStatus and mta/metrics. SetMemoryLimits changes the limits at run
// time. The listeners' byte budget (Options.ReceptionMemory) bounds what
// receptions hold in any case; the monitor covers everything else.
//
// # Shaping, throttles and automation
//
// The Shaper (shaping.Shaping loads KumoMTA's shaping.toml) gives each
// ready queue its path config. Options.Throttle enforces the limits by
// key: connection_limit and additional_connection_limits as slots held for
// a session's life (fleet-wide with shaping/redisthrottle; the local
// worker count enforces connection_limit in any case, and "local:"
// limits stay per process), max_connection_rate before each connection,
// max_message_rate and additional_message_rate_throttles before each
// message. A worker waits for these without counting an attempt. Large
// recipient lists go out in transactions of max_recipients_per_batch,
// and recipients refused with 452 "too many recipients" go again in the
// next transaction of the same attempt. Every response of an attempt goes
// to Shaper.Observe: Suspend and SetConfig actions re-read the path config
// (a suspended ready queue gives its waiting messages back with a
// transient failure), SuspendTenant/SuspendCampaign become scheduled-queue
// suspensions and Bounce/BounceTenant/BounceCampaign bounce rules (see
// SuspendQueues and BounceQueues, which are also the admin API).
//
// # Compatibility with KumoMTA, and deviations
//
// Queue and ready queue names, the retry schedule and jitter, expiry
// texts, log record fields and the X-KumoRef header follow KumoMTA. Known
// differences: queue config and path config are asked for on every
// routing decision instead of being cached with refresh_interval (the Go
// hooks are cheap, shaping.Shaping caches, luapolicy memoizes);
// connection failures give the message taken for the connection a
// TransientFailure, and after consecutive_connection_failures_before_delay
// failures in a row every message waiting in the ready queue gets one
// (KumoMTA's ready-queue delay); a message held by a scheduled-queue
// suspension keeps its spooled due time, so after a restart it meets the
// rules then in force (suspensions and bounce rules live in memory, as in
// KumoMTA). Suspended paths charge an attempt each time a message comes
// due while the suspension lasts. Reception always refuses a bare CR or
// LF with 552 5.6.0, as KumoMTA's default invalid_line_endings = "Deny"
// (Allow and Fix are not offered); DATA is un-dot-stuffed first as RFC
// 5321 section 4.5.2 says, so a line ".<CR>X" holds a bare CR and is
// refused, never stored with the CR dropped (see package listener).
package mta
