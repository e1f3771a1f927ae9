// Package egress holds the ways mail leaves mtakit: egress sources (a local
// address and EHLO name to send from, optionally through a proxy), weighted
// pools of sources, MX resolution and SMTP client delivery.
//
// The EgressSource and Pool interfaces are defined here; Source implements
// EgressSource and WeightedPool implements Pool (see Sources, proxies and
// pools below).
//
// # MX resolution
//
// Resolver (resolver.go, mx.go) looks up MX, A and AAAA records (and TXT
// for MTA-STS, TLSA for DANE) with github.com/miekg/dns against configured
// recursive resolvers (default: the nameservers of /etc/resolv.conf).
// Decisions:
//
//   - Queries advertise an EDNS0 buffer of 1232 bytes and are repeated over
//     TCP when the UDP answer is truncated; a FORMERR to the EDNS0 query is
//     retried once without EDNS0. Servers are tried in order, Attempts
//     times over; SERVFAIL, REFUSED and other failure rcodes, timeouts and
//     network errors move on to the next server.
//   - Answers are cached per (name, type) in a bounded LRU: positive
//     answers for their lowest TTL clamped to [MinTTL, MaxTTL], NXDOMAIN and
//     NODATA for the SOA-derived TTL (RFC 2308) capped at NegativeTTL, and
//     temporary failures briefly (FailureTTL) so a broken domain is not
//     asked again for every message. Concurrent identical queries share one
//     exchange; each caller may give up on its own context, and the shared
//     exchange is cancelled only when all have.
//   - ResolveMX orders hosts as KumoMTA does: by preference, equal
//     preferences shuffled for each call (the site name uses the stable
//     order: preference, then name). No MX means the implicit MX, the
//     domain itself (RFC 5321 section 5.1). A null MX (RFC 7505; any MX
//     target ".", as KumoMTA) is ErrNullMX and NXDOMAIN is ErrNXDomain,
//     both permanent; everything else that fails is temporary, including
//     "no host has an address" (ErrNoAddresses), which KumoMTA also defers
//     (451 4.4.4) rather than bounces. Callers branch with errors.Is on the
//     sentinels, or with IsTemporary / IsPermanent.
//   - Address literals ("[10.0.0.1]", "[IPv6:::1]", and KumoMTA's untagged
//     "[::1]") and "domain:port" routing domains are accepted as in
//     KumoMTA's DomainClassification.
//   - SiteName reproduces KumoMTA's factor_names exactly, so ready queue
//     names (ReadyQueueName) and shaping mx_rollup keys match KumoMTA's;
//     MXListSiteName gives the "mx_list:h1,h2" site of an explicit mx_list.
//
// # Sources, proxies and pools
//
// Source (source.go, proxy.go) is the EgressSource of KumoMTA's
// make_egress_source: a name ("unspecified" for DefaultSource, as
// KumoMTA), an optional source address bound with net.Dialer.LocalAddr,
// an optional EHLO name, remote_port and ttl, and optionally one proxy
// hop:
//
//   - ha_proxy_server + ha_proxy_source_address: the connection goes to
//     the proxy (from source_address when set) and starts with a PROXY
//     protocol v2 header (github.com/pires/go-proxyproto, pinned at
//     v0.15.0, the newest release that builds with Go 1.26.8) naming
//     ha_proxy_source_address, port 0, as the source and the mail host as
//     the destination, exactly as KumoMTA's; the proxy makes the onward
//     connection. As in KumoMTA the PROXY protocol cannot report a proxy
//     that fails to bind the address: that shows as a banner timeout.
//   - socks5_proxy_server + socks5_proxy_source_address (+ optional
//     socks5_proxy_username / socks5_proxy_password, RFC 1929): KumoMTA's
//     SOCKS5 dialogue, which its kumo-proxy serves: a BIND request for the
//     source address (port 0), then a CONNECT to the mail host on the same
//     connection. golang.org/x/net/proxy is not used: it only sends
//     CONNECT and so cannot say which address the proxy should send from.
//     A refused BIND is reported as "the proxy server failed to bind ...".
//
// Proxy host names are resolved when connecting and each address tried
// in turn (KumoMTA "dev"); only addresses of source_address's family are
// tried, and the proxy source address must be of the destination's
// family. ConnInfo.Proxy names the proxy and ConnInfo.LocalAddr is the
// address the proxy sends from. Differences from KumoMTA: a proxy server
// without its source address (or the reverse), or both proxies at once,
// is a configuration error (KumoMTA silently connects directly, or uses
// the HAProxy); suspend_when_unplumbed and suspend_when_proxy_unhealthy
// are parsed but sources are not suspended; ttl is kept (Options().TTL)
// but a Source never expires: reload by building new sources.
//
// WeightedPool (pool.go) is a named pool with smooth weighted round robin
// selection (nginx's): every window of sum(weights) picks of one cursor
// holds each source exactly weight times, interleaved. Next uses the
// pool's cursor; NextFor(queue) keeps a cursor per scheduled queue
// (KeyedPool), as KumoMTA keeps a selector per queue, and a new queue's
// cursor starts where the pool's cursor is, so that many one-message
// queues are spread by weight too. KumoMTA uses LVS interleaved weighted
// round robin, which also hits the weights exactly per cycle but orders
// picks differently. A pool is rebuilt, not edited, on reload; messages
// already bound to a source keep it.
//
// LoadSources (sources.go) reads sources.toml files in the format of
// KumoMTA's policy-extras sources helper ([source."NAME"] tables with the
// keys above, [pool."NAME"."SOURCE"] weight = N, default 1, 0 leaving
// the source out). Files merge key by key. Unknown keys, wrong types,
// invalid addresses and host names, and pools naming undefined sources
// are errors of the form "file:line: message", all reported at once.
//
// # SMTP delivery
//
// Dial (client.go, tls.go) connects for one destination and Conn.Send
// (send.go, conn.go) runs mail transactions on the connection; the caller
// (the delivery loop) reuses a Conn while Usable and not Exhausted, and
// Closes it. Decisions:
//
//   - The SMTP client is mtakit's own, on net, bufio and crypto/tls;
//     go-smtp's Client (v0.25.1) is not used. It has no exported STARTTLS
//     on an open session (only NewClientStartTLS, which fails on a host
//     that does not offer STARTTLS, so opportunistic TLS would need a
//     second connection), cannot pipeline, returns no reply text or code
//     for accepted MAIL and RCPT commands, resets its own deadlines around
//     every command and rewrites bare LF in the data. KumoMTA's
//     behaviour needs all of these. The replies are parsed strictly (three
//     digits 2xx-5xx, one code per multi-line reply, lines of at most 4 KiB,
//     128 lines).
//   - Responses (response.go) are KumoMTA's: code, enhanced code, text
//     with multi-line replies joined by "\n", and the command line
//     (with CRLF) they answer; String is KumoMTA's single-line form
//     "CODE ENH text". Responses mtakit synthesizes start with
//     InternalPrefix, "KumoMTA internal: ", verbatim, so that automation
//     rules (match_internal), classifiers and log readers written for
//     KumoMTA see the same texts. Every candidate host failing is
//     "400 KumoMTA internal: failed to connect to any candidate hosts:
//     <summary><failure>, <failure>..." (code 400, no enhanced code, as
//     KumoMTA), with KumoMTA's summaries for all-OpportunisticInsecure-TLS
//     and all-unplumbed-source failures. A timeout during a transaction is
//     "421 4.4.2 KumoMTA internal: failed to send message to ...: Timed Out
//     waiting ..."; any other failure of the connection during a
//     transaction is "400 KumoMTA internal: failed to send message to ...".
//     All are transient; so are 503 and 3xx replies that end a transaction
//     (Response.Transient), as KumoMTA classifies them.
//   - Host selection follows KumoMTA's smtp_dispatcher: any address in
//     prohibited_hosts refuses the whole destination with the permanent
//     "550 5.4.4 <host>/<addr> is on the list of prohibited_hosts ..."
//     (KumoMTA bounces such a destination; it does not retry it); skip_hosts
//     addresses are dropped, and none left is "451 4.4.4 KumoMTA internal:
//     MX consisted solely of hosts on the skip_hosts list"; the others are
//     tried in order. The port is DialOptions.Port, else the source's
//     remote_port, else smtp_port.
//   - TLS follows enable_tls as KumoMTA: STARTTLS is used when offered
//     (Opportunistic, OpportunisticInsecure) or required (Required,
//     RequiredInsecure: its absence fails the host with "tls policy is
//     Required but STARTTLS is not advertised by ..."); the Insecure modes
//     do not verify the certificate, the others verify it against the MX
//     host name. A failed handshake fails the host (transiently, like
//     every connection failure); the session is never continued in clear
//     text. With opportunistic_tls_reconnect_on_failed_handshake an
//     Opportunistic mode reconnects to the same address in clear text
//     (never when MTA-STS or DANE made TLS Required). KumoMTA continues an
//     OpportunisticInsecure session whose handshake failed with a second
//     EHLO on the same connection, which fails in practice; mtakit fails
//     the host at once with KumoMTA's text for that case.
//     With remember_broken_tls and a shared DialOptions.BrokenTLS, a
//     failed handshake is remembered for the site and the Opportunistic
//     modes skip STARTTLS there meanwhile. Data sent by the peer
//     together with its 220 to STARTTLS fails the host (no response
//     injection). TLS version and cipher are reported with rustls's names
//     ("TLSv1_3", "TLS13_AES_128_GCM_SHA256") for tls_protocol_version
//     and tls_cipher, and the peer certificate's subject as
//     tls_peer_subject_name.
//   - Send pipelines MAIL FROM, the RCPT TOs and DATA when PIPELINING is
//     advertised (in windows of 100 commands so that neither side's socket
//     buffers fill), as KumoMTA does, handling the RFC 2920 section 3.1
//     case; otherwise it waits for each reply and sends DATA only when a
//     recipient was accepted. Accepted recipients share the reply to the
//     final "."; the others keep the reply that refused them. The data is
//     written as given with only dot-stuffing added (and CRLF before the
//     final dot when missing). BODY=8BITMIME and SMTPUTF8 are added when the
//     content needs them and refused with KumoMTA's 554 5.6.3 / 5.6.7 when
//     the host lacks them; SIZE is sent when advertised.
//   - Each phase has its path timeout (connect, banner, EHLO, STARTTLS,
//     MAIL FROM, RCPT TO, DATA, data dot; RSET 5 s; writes at most 60 s per
//     64 KiB); ctx cancellation closes the connection at once. After a
//     failed transaction RSET restores the session; a network failure, a
//     timeout, a 421 or a failed RSET leaves the Conn not Usable. Usable
//     also notices, with a non-blocking peek at the socket, a peer that
//     closed an idle connection or sent an unsolicited 421.
//
// # Transport security
//
// The path's TLS mode is raised, per KumoMTA's dispatcher, by the
// destination's DANE and MTA-STS policies, and the session may
// authenticate and present a client certificate (tlsconfig.go, auth.go,
// mtasts.go, dane.go):
//
//   - MTA-STS (RFC 8461; enable_mta_sts, default true) applies when
//     DialOptions.MTASTS and Domain are set. [MTASTS] looks up
//     _mta-sts.<domain> TXT through a TXTResolver (*Resolver), fetches
//     https://mta-sts.<domain>/.well-known/mta-sts.txt with an injectable
//     http.Client (no redirects, 200 and text/plain only, at most 64 KiB,
//     20 s), and caches the policy for max_age, checking the TXT id on each
//     use and fetching again when it changes; a failed refetch keeps the
//     cached policy and failures are remembered for 5 minutes. An enforce
//     policy drops the MX hosts its patterns do not match ("*.x" matches
//     one label) and makes enable_tls Required; when it permits no host the
//     destination fails with KumoMTA's "451 4.4.4 MTA-STS enforce policy
//     for D permits none of its MX hosts ..." and nothing is connected to.
//     A testing policy makes enable_tls OpportunisticInsecure (KumoMTA's
//     choice); none leaves it. A policy that cannot be had counts as none
//     (RFC 8461 section 5.1). Deviation: KumoMTA applies the host pruning
//     when it resolves the queue (so the policy can affect the site name);
//     mtakit applies it in Dial, and its failure text lacks KumoMTA's
//     "failed to resolve queue D: " prefix.
//   - DANE (RFC 7672; enable_dane) applies when DialOptions.DANE is set,
//     the MX selection was DNSSEC-secure (DialOptions.MXSecure, from
//     MXPlan.Secure or a trusted mx_list) and the host's addresses were
//     (MXHost.Secure). Security comes only from a Resolver with
//     ResolverOptions.TrustAD: it asks for the AD bit and believes it;
//     any other resolver is never secure. Secure usable TLSA records
//     (DANE-TA(2), DANE-EE(3)) make enable_tls Required with the
//     certificate checked against them instead of the PKIX roots (DANE-EE:
//     the leaf matches, no name or date checks; DANE-TA: a certificate of
//     the presented chain matches and anchors a verification of the leaf
//     for the MX host name) and MTA-STS is not consulted; records that are
//     all unusable make it RequiredInsecure; secure absence or an insecure
//     answer leave it; a failed TLSA lookup (SERVFAIL, which validating
//     resolvers return for bogus data, or a timeout) fails the host
//     rather than downgrade. ConnInfo.DANE reports the outcome with
//     KumoMTA's dane_result_count labels. Deviation: a host reached
//     through a CNAME into an unsigned zone counts as insecure (KumoMTA
//     checks whether the alias itself is signed); the DANE-TA certificate
//     must be in the chain the server sends.
//   - SMTP AUTH (smtp_auth_plain_username, smtp_auth_plain_password from a
//     shaping.KeySource) follows TLS on every connection of the path. As
//     in KumoMTA, credentials are never sent in clear text unless
//     allow_smtp_auth_plain_without_tls, nor over TLS whose certificate was
//     not verified (Insecure modes, unusable DANE) unless
//     allow_smtp_auth_plain_without_valid_certificate; those cases and a
//     refusal fail the host ("authenticating as U via SMTP AUTH PLAIN to
//     H: ..."). The mechanism is PLAIN with an initial response; mtakit
//     uses LOGIN when the host advertises LOGIN but not PLAIN (KumoMTA
//     only speaks PLAIN). Credentials never appear in responses or errors.
//   - tls_certificate and tls_private_key (PEM; the key may be in the
//     certificate's file) are presented as the client certificate (read
//     again after 5 minutes, so a renewed file is picked up). The
//     NO_TLSV1, NO_TLSV1_1, NO_TLSV1_2 and NO_TLSV1_3 names of
//     openssl_options set the protocol version range (other options have
//     no crypto/tls meaning and are ignored). rustls_cipher_suites, else
//     openssl_cipher_list (explicit suite names only: keywords such as
//     HIGH are a configuration error, "!x" exclusions are ignored), limit
//     the TLS 1.2 cipher suites; crypto/tls cannot limit TLS 1.3 suites,
//     so TLS13_* names and openssl_cipher_suites have no effect, nor has
//     tls_prefer_openssl. A bad value fails every connection of the path
//     with "invalid egress configuration: ...".
package egress

import (
	"context"
	"net"
)

// EgressSource is a named way out: the address to bind, the EHLO name to
// present, and how to reach the destination (directly or via a proxy hop).
//
// Implementations must be safe for concurrent use.
type EgressSource interface {
	// Name is the source name used in ready queue names and log records.
	Name() string
	// EHLODomain is the name announced in EHLO; "" means the server's
	// hostname.
	EHLODomain() string
	// Dial connects to addr ("host:port") from this source.
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// Pool is a weighted set of egress sources (KumoMTA's egress pool).
type Pool interface {
	// Name is the pool name used in log records.
	Name() string
	// Next returns the source to use for the next ready queue assignment,
	// round-robin by weight.
	Next() EgressSource
}
