package listener

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// BatchHandling says how a transaction with several recipients becomes
// spooled messages, as KumoMTA's batch_handling.
type BatchHandling string

const (
	// BifurcateAlways (the default) makes one message per recipient.
	BifurcateAlways BatchHandling = "BifurcateAlways"
	// BatchByDomain makes one message per recipient domain, so that
	// several recipients at one domain are delivered in one transaction.
	BatchByDomain BatchHandling = "BatchByDomain"
)

// TraceHeaders controls the trace headers added to received messages, as
// KumoMTA's start_esmtp_listener trace_headers.
type TraceHeaders struct {
	// DisableReceived turns off the Received: header (KumoMTA's
	// received_header = false).
	DisableReceived bool
	// DisableSupplemental turns off the supplemental header (KumoMTA's
	// supplemental_header = false).
	DisableSupplemental bool
	// HeaderName names the supplemental header; default "X-KumoRef".
	HeaderName string
	// IncludeMetaNames lists message meta keys to include in the
	// supplemental header.
	IncludeMetaNames []string
}

// Defaults used when a Config field is zero. They are KumoMTA's defaults
// for start_esmtp_listener.
const (
	DefaultMaxMessageSize           = 20 << 20
	DefaultMaxRecipients            = 1024
	DefaultMaxMessagesPerConnection = 10000
	DefaultMaxConnections           = 32768
	DefaultClientTimeout            = 60 * time.Second
	DefaultDataProcessingTimeout    = 300 * time.Second
	DefaultLineLengthLimit          = 998
	DefaultBanner                   = "mtakit"
	DefaultSupplementalHeader       = "X-KumoRef"
)

// Config configures one ESMTP listener. The zero value of every field
// means its default; DefaultRelayHosts are used when RelayHosts is nil.
type Config struct {
	// Addr is the address to listen on, "127.0.0.1:2025" by default.
	Addr string
	// Hostname is announced in the greeting and EHLO reply and used in
	// Received headers; default os.Hostname().
	Hostname string
	// Banner follows the hostname in the 220 greeting.
	Banner string

	// RelayHosts are the client networks allowed to relay to any domain.
	// nil means 127.0.0.1 and ::1; use an empty non-nil slice for none.
	RelayHosts []netip.Prefix
	// Domains looks up listener domains (relay_to, relay_from, log_oob,
	// log_arf). nil means no listener domains.
	Domains DomainLookup

	// Budget, when set, bounds the message data held in memory by this
	// listener's receptions (shared with others using the same Budget);
	// beyond it transactions get 452 4.3.1. mta.Server.ListenSMTP sets
	// the server's budget when this is nil.
	Budget *Budget

	// Shed, when set, is asked at every new connection and every MAIL
	// FROM whether to refuse new mail; a non-empty reason refuses it. A
	// new connection gets "421 4.3.2 <hostname> <reason>. Try later" and
	// is closed, as KumoMTA answers while load shedding; a MAIL FROM in a
	// session already open gets "451 4.3.2 <reason>, try again later".
	// mta.Server.ListenSMTP sets the server's memory monitor when this is
	// nil.
	Shed func() string

	MaxMessageSize           int64
	MaxRecipients            int
	MaxMessagesPerConnection int
	MaxConnections           int
	// MaxConnectionsPerIP, when positive, bounds the sessions open at
	// once from one client address (421 4.7.0 beyond), so a few slow
	// clients cannot take every MaxConnections slot. Off by default, as
	// KumoMTA has no such limit: injectors and load balancers legitimately
	// open many sessions from one address.
	MaxConnectionsPerIP int
	// ClientTimeout bounds the wait for each command or data chunk from
	// the client; in DATA, for each read of up to 1 KiB of the message.
	ClientTimeout time.Duration
	// DataProcessingTimeout bounds the time the Handler may take to accept
	// a message after DATA.
	DataProcessingTimeout time.Duration
	// LineLengthLimit is the longest line accepted in DATA, excluding CRLF
	// (KumoMTA's line_length_hard_limit).
	LineLengthLimit int

	// TLS enables STARTTLS when non-nil.
	TLS *tls.Config

	// Hooks run at each phase of a session (connect, EHLO, AUTH, MAIL,
	// RCPT); see Hooks.
	Hooks Hooks
	// AllowInsecureAuth offers AUTH (Hooks.AuthPlain) before STARTTLS too.
	// Off by default, as in KumoMTA: credentials should not cross the
	// network in clear text.
	AllowInsecureAuth bool
	// Meta presets connection meta values for every session (KumoMTA's
	// start_esmtp_listener meta); hooks can read and change them.
	Meta map[string]any

	TraceHeaders  TraceHeaders
	BatchHandling BatchHandling
}

// DefaultRelayHosts returns the relay hosts used when Config.RelayHosts is
// nil: the loopback addresses.
func DefaultRelayHosts() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("::1/128"),
	}
}

// withDefaults returns a copy of c with zero fields set to defaults, or an
// error for values that cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:2025"
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if c.Banner == "" {
		c.Banner = DefaultBanner
	}
	if c.RelayHosts == nil {
		c.RelayHosts = DefaultRelayHosts()
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxMessagesPerConnection == 0 {
		c.MaxMessagesPerConnection = DefaultMaxMessagesPerConnection
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.ClientTimeout == 0 {
		c.ClientTimeout = DefaultClientTimeout
	}
	if c.DataProcessingTimeout == 0 {
		c.DataProcessingTimeout = DefaultDataProcessingTimeout
	}
	if c.LineLengthLimit == 0 {
		c.LineLengthLimit = DefaultLineLengthLimit
	}
	if c.TraceHeaders.HeaderName == "" {
		c.TraceHeaders.HeaderName = DefaultSupplementalHeader
	}
	if c.BatchHandling == "" {
		c.BatchHandling = BifurcateAlways
	}
	switch {
	case c.MaxMessageSize < 0:
		return c, fmt.Errorf("listener %s: MaxMessageSize %d is negative", c.Addr, c.MaxMessageSize)
	case c.MaxRecipients < 0, c.MaxMessagesPerConnection < 0, c.MaxConnections < 0, c.MaxConnectionsPerIP < 0:
		return c, fmt.Errorf("listener %s: limits must not be negative", c.Addr)
	case c.ClientTimeout < 0, c.DataProcessingTimeout < 0:
		return c, fmt.Errorf("listener %s: timeouts must not be negative", c.Addr)
	case c.LineLengthLimit < 78:
		return c, fmt.Errorf("listener %s: LineLengthLimit %d is below RFC 5322's 78", c.Addr, c.LineLengthLimit)
	}
	switch c.BatchHandling {
	case BifurcateAlways, BatchByDomain:
	default:
		return c, fmt.Errorf("listener %s: unknown BatchHandling %q", c.Addr, c.BatchHandling)
	}
	return c, nil
}
