// Package shaping decides how fast and in what manner mtakit talks to each
// destination: the egress path configuration of KumoMTA.
//
// A [Shaper] maps (egress source, site, domain) to a [PathConfig]. The full
// implementation that loads KumoMTA's shaping.toml (defaults, per-domain
// blocks, MX rollup, providers, per-source overrides and automation rules)
// is built by its own issue; this package holds the interface and the
// configuration type with KumoMTA's defaults.
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
// delivers to one site from one egress source. Zero durations and limits
// mean "use the default"; [Default] returns KumoMTA's defaults.
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

	MaxRecipientsPerBatch                    int
	ConsecutiveConnectionFailuresBeforeDelay int
	ProhibitedHosts                          []netip.Prefix
	SkipHosts                                []netip.Prefix
	Suspended                                bool
	ProviderName                             string
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
		MaxRecipientsPerBatch:                    100,
		ConsecutiveConnectionFailuresBeforeDelay: 100,
		ProhibitedHosts: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("0.0.0.0/32"),
			netip.MustParsePrefix("::/128"),
		},
	}
}

// Response is an SMTP reply seen by the delivery side, as the shaper
// observes it.
type Response struct {
	Code     int
	Enhanced string // "5.7.1", or "" when the peer sent none
	Text     string
}

// Action is what a shaper's automation asks the server to do after
// observing a response (KumoMTA's TSA actions). Actions are built by the
// shaping.toml issue; the type is here so that the server can carry them.
type Action struct {
	Kind     string // "Suspend", "SetConfig", "SuspendTenant", "SuspendCampaign", "Bounce", ...
	Name     string // for SetConfig: the PathConfig key
	Value    string // for SetConfig: its value
	Duration time.Duration
	Reason   string
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

// PathFunc adapts a function to Shaper, for configurations computed in Go
// without automation: Observe never returns actions.
type PathFunc func(ctx context.Context, source, site, domain string) (PathConfig, error)

// PathConfig calls f.
func (f PathFunc) PathConfig(ctx context.Context, source, site, domain string) (PathConfig, error) {
	return f(ctx, source, site, domain)
}

// Observe implements Shaper; a PathFunc has no automation rules.
func (PathFunc) Observe(context.Context, string, string, string, Response) []Action { return nil }
