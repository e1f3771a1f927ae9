// Package shaping decides how fast and in what manner mtakit talks to each
// destination: KumoMTA's egress path configuration, its shaping.toml
// files and its traffic shaping automation (TSA), in process.
//
// A [Shaper] maps (egress source, site, domain) to a [PathConfig] and
// reacts to the responses of each path through Observe. [PathFunc] adapts
// a Go function; [Shaping] is the full implementation:
//
//   - [Load] merges shaping.toml files in order, accepting KumoMTA's format
//     exactly: the "default" block, domain blocks (mx_rollup, default true,
//     keys them by the site name of their MX hosts, resolved at load time
//     through [Options].LookupMX and SiteName; lookups that fail or find a
//     null MX skip the block as KumoMTA's dns_fail and null_mx levels
//     describe), replace_base, per-source blocks (sources), provider blocks
//     with MXSuffix, DomainSuffix and HostName match rules, and automation
//     rules. Every make_egress_path key is accepted and checked; unknown
//     keys and bad values (durations, ThrottleSpecs, LimitSpecs, TLS modes,
//     regexes, actions) are errors naming file and line. KumoMTA's default
//     shaping file is embedded ([DefaultFile], served by [ReadFiles] for
//     [DefaultFilePath]).
//   - [Shaping.PathConfig] merges in KumoMTA's documented order: default,
//     matching providers, provider source blocks, the site's mx_rollup
//     block, the domain's mx_rollup=false block, the site block's source
//     block, the domain block's source block. Results are cached (about
//     0.1 µs a lookup).
//   - [Shaping.Observe] applies the automation rules of the path (default,
//     providers, site, domain) to a response: regexes in fancy-regex syntax
//     (dlclark/regexp2, with a match timeout), triggers Immediate and
//     {Threshold="N/period"}, and actions Suspend, SetConfig,
//     SetDomainConfig, SuspendTenant, SuspendCampaign, Bounce, BounceTenant
//     and BounceCampaign for the rule's duration. Suspend and SetConfig show
//     in PathConfig (Suspended, overridden keys) until they expire by
//     themselves; [Shaping.ActiveActions] lists what is in force and
//     [Shaping.CancelActions] lifts it. The tenant, campaign and bounce
//     actions are returned for the queue engine to apply.
//   - [Throttle] enforces rates and connection limits by key:
//     [LocalThrottle] in one process; package shaping/redisthrottle shares
//     them through Redis across a fleet.
//
// Deviations from KumoMTA:
//
//   - Automation runs in the process that delivers, not in a separate
//     tsa-daemon fed by log records; its state is per process.
//   - A Threshold trigger counts the matches on the path (source, site) in
//     the preceding period of the threshold, as KumoMTA documents ("10/hr":
//     10 matches in the preceding hour); KumoMTA's tsa-daemon counts over
//     the rule's duration instead.
//   - Only TOML files are read (no JSON, no HTTP sources).
//   - A later provider block's provider_max_message_rate replaces an
//     earlier one's (KumoMTA's provider merge forgets it).
//   - Keys mtakit does not act on (use_lmtp, tls_prefer_openssl, ...) are
//     kept in PathConfig.Other.
//   - Key sources ([KeySource]) are read from files and key_data only;
//     the Vault and event forms load but fail when the secret is needed.
//   - A provider block matching on MX host names does not match a null-MX
//     domain.
package shaping

import (
	"context"
	"net/netip"
	"time"
)

// TLSMode is the enable_tls setting of an egress path.
type TLSMode string

// TLS modes, named as KumoMTA names them.
const (
	// Opportunistic uses STARTTLS when offered and verifies the certificate;
	// a failed handshake is a transient failure.
	Opportunistic TLSMode = "Opportunistic"
	// OpportunisticInsecure uses STARTTLS when offered without verifying
	// the certificate.
	OpportunisticInsecure TLSMode = "OpportunisticInsecure"
	// Required fails transiently when STARTTLS is absent or the certificate
	// does not verify.
	Required TLSMode = "Required"
	// RequiredInsecure requires STARTTLS but does not verify the certificate.
	RequiredInsecure TLSMode = "RequiredInsecure"
	// Disabled never uses TLS.
	Disabled TLSMode = "Disabled"
)

// PathConfig is the effective configuration of one egress path: how mtakit
// delivers to one site from one egress source. [Default] returns KumoMTA's
// defaults; a loaded shaping configuration starts from them.
//
// Every key of KumoMTA's make_egress_path is accepted by the shaping.toml
// loader. Keys that mtakit acts on have a field here; the rest are kept,
// validated, in Other. Maps and slices may be shared between the values
// returned by a Shaper: treat them as read-only.
type PathConfig struct {
	ConnectionLimit            int
	MaxDeliveriesPerConnection int
	MaxMessageRate             string // ThrottleSpec such as "100/s"; "" = unlimited
	MaxConnectionRate          string // ThrottleSpec; "" = unlimited
	EnableTLS                  TLSMode
	SMTPPort                   int
	EHLODomain                 string

	ConnectTimeout  time.Duration
	BannerTimeout   time.Duration
	EHLOTimeout     time.Duration
	MailFromTimeout time.Duration
	RcptToTimeout   time.Duration
	DataTimeout     time.Duration
	DataDotTimeout  time.Duration
	IdleTimeout     time.Duration
	StartTLSTimeout time.Duration
	RsetTimeout     time.Duration
	AuthTimeout     time.Duration

	MaxRecipientsPerBatch                    int
	ConsecutiveConnectionFailuresBeforeDelay int
	// ProhibitedHosts are destination networks mtakit refuses to deliver
	// to: an MX resolving there is a permanent failure ("... is on the
	// list of prohibited_hosts"), as in KumoMTA. nil means KumoMTA's
	// default, 127.0.0.0/8, ::1, 0.0.0.0 and :: — so delivery to an SMTP
	// server on loopback (a local sink, a test) bounces until this is an
	// empty, non-nil slice: []netip.Prefix{}.
	ProhibitedHosts []netip.Prefix
	// SkipHosts are destination networks whose MX addresses are skipped
	// (the next one is tried); nil means none.
	SkipHosts []netip.Prefix
	// Suspended is set while an automation rule's Suspend action is in
	// force for the path (source, site): deliver nothing until it expires.
	Suspended    bool
	ProviderName string

	// ConnectionLimitLocal is set by connection_limit = "local:N": the
	// limit is per process even when throttles are shared through Redis.
	ConnectionLimitLocal bool
	// AdditionalConnectionLimits are further named connection limits
	// shared by every path that names them (additional_connection_limits;
	// a provider's provider_connection_limit lands here under
	// "shaping-provider-NAME-SOURCE-limit").
	AdditionalConnectionLimits map[string]LimitSpec
	// AdditionalMessageRateThrottles are further named message rates
	// (ThrottleSpecs) shared by every path that names them
	// (additional_message_rate_throttles; provider_max_message_rate lands
	// here under "shaping-provider-NAME-SOURCE-rate").
	AdditionalMessageRateThrottles map[string]string
	// SourceSelectionRate and AdditionalSourceSelectionRates
	// (source_selection_rate, additional_source_selection_rates; a
	// provider source's provider_source_selection_rate lands under
	// "shaping-provider-NAME-SOURCE-selection-rate") limit how often this
	// source is picked from its pool for the path.
	SourceSelectionRate            string
	AdditionalSourceSelectionRates map[string]string
	// MaxReady is the ready queue capacity (max_ready).
	MaxReady int
	// RememberBrokenTLS, when non-zero, is how long to remember that a
	// site's STARTTLS is broken and skip it (remember_broken_tls).
	RememberBrokenTLS time.Duration
	// SystemShutdownTimeout is how long sessions may take to close at
	// shutdown (system_shutdown_timeout); 0 means the server's default.
	SystemShutdownTimeout time.Duration

	// Transport security. Package egress documents how each applies.

	// EnableMTASTS lets the destination's MTA-STS policy raise (enforce)
	// or set (testing) the TLS mode (enable_mta_sts; default true).
	EnableMTASTS bool
	// EnableDANE applies the DANE TLSA records of DNSSEC-secure MX hosts
	// (enable_dane; default false).
	EnableDANE bool
	// OpportunisticTLSReconnectOnFailedHandshake reconnects in clear text
	// to a host whose STARTTLS handshake failed in an Opportunistic mode
	// (opportunistic_tls_reconnect_on_failed_handshake).
	OpportunisticTLSReconnectOnFailedHandshake bool
	// SMTPAuthPlainUsername, when set, makes every connection of the path
	// authenticate with AUTH PLAIN (smtp_auth_plain_username) using
	// SMTPAuthPlainPassword (smtp_auth_plain_password; nil means an empty
	// password).
	SMTPAuthPlainUsername string
	SMTPAuthPlainPassword *KeySource
	// AllowSMTPAuthPlainWithoutTLS permits sending the credentials over a
	// connection without TLS (allow_smtp_auth_plain_without_tls).
	AllowSMTPAuthPlainWithoutTLS bool
	// AllowSMTPAuthPlainWithoutValidCertificate permits sending them over
	// TLS whose peer certificate was not verified
	// (allow_smtp_auth_plain_without_valid_certificate).
	AllowSMTPAuthPlainWithoutValidCertificate bool
	// TLSCertificate and TLSPrivateKey are the PEM client certificate
	// (chain) and key presented in STARTTLS (tls_certificate,
	// tls_private_key).
	TLSCertificate, TLSPrivateKey *KeySource
	// OpenSSLCipherList restricts the TLS 1.2 cipher suites, in OpenSSL's
	// cipher list syntax (openssl_cipher_list).
	OpenSSLCipherList string
	// OpenSSLOptions holds SslOption names joined by "|"
	// (openssl_options); NO_TLSV1_x set the protocol version range.
	OpenSSLOptions string
	// RustlsCipherSuites restricts the cipher suites by rustls name
	// (rustls_cipher_suites).
	RustlsCipherSuites []string

	// Other holds the make_egress_path keys that mtakit parses and
	// validates but does not act on (use_lmtp, tls_prefer_openssl,
	// reconnect_strategy, ...), by key, as decoded from TOML (string,
	// int64, float64, bool, []any, map[string]any).
	Other map[string]any
}

// Default returns the egress path defaults of KumoMTA's make_egress_path.
func Default() PathConfig {
	return PathConfig{
		ConnectionLimit:                          32,
		MaxDeliveriesPerConnection:               1024,
		EnableTLS:                                Opportunistic,
		SMTPPort:                                 25,
		ConnectTimeout:                           60 * time.Second,
		BannerTimeout:                            60 * time.Second,
		EHLOTimeout:                              300 * time.Second,
		MailFromTimeout:                          300 * time.Second,
		RcptToTimeout:                            300 * time.Second,
		DataTimeout:                              300 * time.Second,
		DataDotTimeout:                           300 * time.Second,
		IdleTimeout:                              5 * time.Second,
		StartTLSTimeout:                          5 * time.Second,
		RsetTimeout:                              5 * time.Second,
		EnableMTASTS:                             true,
		AuthTimeout:                              60 * time.Second,
		MaxRecipientsPerBatch:                    100,
		ConsecutiveConnectionFailuresBeforeDelay: 100,
		MaxReady:                                 1024,
		ProhibitedHosts:                          defaultProhibited(),
	}
}

func defaultProhibited() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("0.0.0.0/32"),
		netip.MustParsePrefix("::/128"),
	}
}

// Response is an SMTP reply seen by the delivery side, as the shaper
// observes it.
type Response struct {
	Code     int
	Enhanced string // "5.7.1", or "" when the peer sent none
	Text     string
}

// Kinds of Action: KumoMTA's traffic shaping automation actions.
const (
	// ActionSuspend suspends the ready queue of (Source, Site): nothing is
	// delivered on that path until Expires. PathConfig reports
	// Suspended=true for the path meanwhile.
	ActionSuspend = "Suspend"
	// ActionSetConfig overrides one path configuration key (Name = Value)
	// until Expires, for (Source, Site) when Rollup is set and for
	// (Source, Domain) otherwise. PathConfig reflects it meanwhile.
	ActionSetConfig = "SetConfig"
	// ActionSetDomainConfig is ActionSetConfig that always applies to
	// (Source, Domain).
	ActionSetDomainConfig = "SetDomainConfig"
	// ActionSuspendTenant suspends the scheduled queues of Domain for the
	// tenant of the message whose response triggered it (no effect
	// without a tenant).
	ActionSuspendTenant = "SuspendTenant"
	// ActionSuspendCampaign suspends the scheduled queues of Domain for
	// the tenant and campaign of the triggering message (as
	// SuspendTenant without a campaign).
	ActionSuspendCampaign = "SuspendCampaign"
	// ActionBounce bounces the messages of every scheduled queue of Domain
	// until Expires.
	ActionBounce = "Bounce"
	// ActionBounceTenant is ActionBounce limited to the triggering
	// message's tenant (no effect without one).
	ActionBounceTenant = "BounceTenant"
	// ActionBounceCampaign is ActionBounce limited to the triggering
	// message's tenant and campaign (as BounceTenant without a campaign).
	ActionBounceCampaign = "BounceCampaign"
)

// Action is what a shaper's automation asks the server to do after
// observing a response (KumoMTA's TSA actions). The shaper itself keeps
// Suspend and SetConfig in force through PathConfig; the tenant, campaign
// and bounce actions need the queue engine, which knows the triggering
// message's tenant and campaign.
type Action struct {
	Kind     string // one of the Action* constants
	Name     string // for SetConfig/SetDomainConfig: the shaping.toml key, e.g. "connection_limit"
	Value    string // for SetConfig/SetDomainConfig: its value, e.g. "1" or "1/minute"
	Duration time.Duration
	Reason   string // "automation rule: REGEX", as KumoMTA words it

	// Source, Site and Domain are the path whose response triggered the
	// action.
	Source string
	Site   string
	Domain string
	// Rollup tells the scope of a SetConfig: (Source, Site) when true,
	// (Source, Domain) when false.
	Rollup bool
	// Expires is when the action stops being in force.
	Expires time.Time
}

// Shaper supplies egress path configuration and reacts to responses.
//
// Implementations must be safe for concurrent use.
type Shaper interface {
	// PathConfig returns the configuration for delivering to site (the MX
	// rollup name) for domain from the named egress source.
	PathConfig(ctx context.Context, source, site, domain string) (PathConfig, error)

	// Observe is called with every response from site; it returns the
	// automation actions that the response triggers, if any.
	Observe(ctx context.Context, source, site, domain string, resp Response) []Action
}

var _ Shaper = (*Shaping)(nil)

// PathFunc adapts a function to Shaper, for configurations computed in Go
// without automation: Observe never returns actions.
type PathFunc func(ctx context.Context, source, site, domain string) (PathConfig, error)

// PathConfig calls f.
func (f PathFunc) PathConfig(ctx context.Context, source, site, domain string) (PathConfig, error) {
	return f(ctx, source, site, domain)
}

// Observe implements Shaper; a PathFunc has no automation rules.
func (PathFunc) Observe(context.Context, string, string, string, Response) []Action { return nil }
