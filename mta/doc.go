// Package mta is mtakit's server: it composes a spool, listeners, a
// shaper, egress sources and policy hooks into a mail transfer agent.
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
//  2. Spool. Data and meta are stored in parallel; the client gets its
//     "250 OK ids=..." only when both are durable. If either store fails,
//     both are removed and the client gets 451 4.3.0. A Reception record
//     is logged.
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
// On start, New enumerates the meta spool and schedules every message
// with its due time and attempt count, so a crash never loses an
// acknowledged message; it may deliver one a second time if the crash came
// between the remote 250 and the removal (at-least-once delivery).
//
// # Compatibility with KumoMTA, and deviations
//
// Queue and ready queue names, the retry schedule and jitter, expiry
// texts, log record fields and the X-KumoRef header follow KumoMTA. Known
// differences: queue config and path config are asked for on every
// routing decision instead of being cached with refresh_interval (the Go
// hooks are cheap; luapolicy will memoize); the ready queue does not yet
// split batches by max_recipients_per_batch; connection failures give the
// message taken for the connection a TransientFailure, and only after
// consecutive_connection_failures_before_delay failures does the whole
// ready queue get one, without KumoMTA's ready-queue delay state;
// admin suspension, bounce and rebind APIs, throttles shared across nodes
// and automation actions from Shaper.Observe are not wired yet.
package mta
