package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

// DefaultRSETTimeout bounds the wait for the reply to RSET (KumoMTA's
// rset_timeout default).
const DefaultRSETTimeout = 5 * time.Second

const (
	// quitTimeout bounds QUIT in Close.
	quitTimeout = 2 * time.Second
	// maxWriteTimeout caps the deadline of one write, as KumoMTA caps its
	// request timeouts at 60 seconds.
	maxWriteTimeout = 60 * time.Second
	// probeTimeout bounds the look at data that arrived on an idle
	// connection (see Conn.Usable).
	probeTimeout = 100 * time.Millisecond
)

// Sentinel causes wrapped by the *ResponseError of a Dial that found no
// host it may connect to.
var (
	// ErrProhibitedHost: an address of the destination is in the path's
	// prohibited_hosts. KumoMTA refuses the whole destination
	// permanently (550 5.4.4).
	ErrProhibitedHost = errors.New("destination address is in prohibited_hosts")
	// ErrAllHostsSkipped: every address of the destination is in the
	// path's skip_hosts (451 4.4.4).
	ErrAllHostsSkipped = errors.New("every destination address is in skip_hosts")
)

// ErrConnUnusable is returned by Send on a connection that is closed or
// broken, or that the peer closed (or sent an unsolicited reply on) while
// it was idle. Nothing was sent: dial again and retry without counting an
// attempt.
var ErrConnUnusable = errors.New("egress: connection is not usable")

// DialOptions says where and how to connect.
type DialOptions struct {
	// Source is the egress source to connect from; nil means
	// DefaultSource().
	Source EgressSource
	// Hosts are the mail hosts to try, in order (MXPlan.Hosts); each
	// host's addresses are tried in order. Hosts without addresses are
	// ignored.
	Hosts []MXHost
	// Port, if not 0, is the port to connect to (for example MXPlan.Port
	// of a "domain:port" routing domain). Otherwise the source's
	// RemotePort (when the source has a RemotePort() int method returning
	// non-zero), else Config.SMTPPort, else 25.
	Port int
	// Config is the egress path configuration. Zero durations mean
	// KumoMTA's defaults (shaping.Default); a nil ProhibitedHosts means
	// the default set (127.0.0.0/8, ::1, 0.0.0.0, ::) while a non-nil
	// empty slice prohibits nothing; an empty EnableTLS means
	// Opportunistic.
	Config shaping.PathConfig
	// TLSConfig is the base TLS client configuration for STARTTLS (for
	// example RootCAs in tests, a client certificate); nil means defaults.
	// It is cloned per connection; leave ServerName empty to verify each
	// host under its own name. InsecureSkipVerify is set for the Insecure
	// TLS modes.
	TLSConfig *tls.Config
	// Domain is the routing domain whose MX records (or implicit MX) gave
	// Hosts: the MTA-STS policy domain. Leave it empty when Hosts did not
	// come from the domain's DNS (mx_list, smart hosts, address literals):
	// then no MTA-STS policy applies, as in KumoMTA.
	Domain string
	// MTASTS supplies MTA-STS policies when Config.EnableMTASTS is set
	// (as in shaping.Default; a PathConfig literal leaves it off); nil
	// disables MTA-STS (the zero DialOptions does no policy lookups).
	// *MTASTS implements it.
	MTASTS MTASTSSource
	// DANE looks up TLSA records when Config.EnableDANE is set; nil
	// disables DANE. *Resolver implements it (with
	// ResolverOptions.TrustAD, else nothing is ever secure).
	DANE TLSAResolver
	// MXSecure reports that Hosts were selected securely: from a
	// DNSSEC-validated MX answer (MXPlan.Secure), or from an mx_list the
	// operator trusts (KumoMTA's treat_mx_list_as_secure). DANE applies
	// only to hosts of a secure selection whose addresses are secure too
	// (MXHost.Secure).
	MXSecure bool
	// BrokenTLS, with the path's remember_broken_tls, remembers under Site
	// that a STARTTLS handshake failed, and skips TLS for the site in the
	// Opportunistic modes meanwhile (KumoMTA keys it by ready queue
	// name). Nil remembers nothing.
	BrokenTLS *BrokenTLS
	// Site names the destination (ready queue name or site name) in the
	// text of synthesized failure responses; optional.
	Site string
	// Hostname is the EHLO name used when neither Config.EHLODomain nor
	// the source's EHLODomain is set; "" means os.Hostname().
	Hostname string
	// RSETTimeout bounds the reply to RSET; 0 means DefaultRSETTimeout.
	RSETTimeout time.Duration
	// Ignore8BitChecks sends 8-bit data to hosts that do not advertise
	// 8BITMIME and non-ASCII addresses to hosts that do not advertise
	// SMTPUTF8, instead of failing the message (KumoMTA's
	// ignore_8bit_checks).
	Ignore8BitChecks bool
	// Logger receives Debug records of connection attempts and failures;
	// nil discards.
	Logger *slog.Logger
}

// ConnInfo describes an established connection, for log records.
type ConnInfo struct {
	// Source is the egress source name.
	Source string
	// Host is the mail host name connected to (peer_address.name).
	Host string
	// Addr is the peer's address and port (peer_address.addr).
	Addr netip.AddrPort
	// LocalAddr is the local end of the connection (source_address); for
	// a connection through a proxy, the address the proxy sends from.
	LocalAddr netip.AddrPort
	// Proxy describes the proxy hop; nil for a direct connection.
	Proxy *ProxyInfo
	// EHLOName is the name this side announced.
	EHLOName string
	// Banner is the peer's greeting.
	Banner Response
	// TLS describes the STARTTLS session; nil when the connection is in
	// clear text.
	TLS *TLSInfo
	// MTASTS is the mode of the MTA-STS policy applied to the connection;
	// "" when none was (DANE takes precedence when it found usable
	// records).
	MTASTS MTASTSMode
	// DANE is the DANE outcome for the host (DANEOK, DANEUnusable,
	// DANENotApplicable, DANEInsecureChain); "" when DANE is off.
	DANE string
	// AuthMechanism is the SASL mechanism the session authenticated with
	// ("PLAIN", "LOGIN"); "" when it did not authenticate.
	AuthMechanism string
}

// TLSInfo describes a STARTTLS session with KumoMTA's log record names.
type TLSInfo struct {
	// Version is the protocol version as KumoMTA writes tls_protocol_version:
	// "TLSv1_3", "TLSv1_2".
	Version string
	// Cipher is the cipher suite as KumoMTA (rustls) writes tls_cipher:
	// "TLS13_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".
	Cipher string
	// PeerSubjectName is the subject of the peer's certificate as
	// "CN=mx.example.com"-style entries (tls_peer_subject_name).
	PeerSubjectName []string
	// Verified reports that the certificate chain and host name were
	// verified (false in the Insecure modes), or that the certificate
	// matched the host's DANE TLSA records.
	Verified bool
	// DANE reports that the certificate was authenticated by DANE TLSA
	// records instead of the PKIX roots.
	DANE bool
	// State is the full connection state.
	State tls.ConnectionState
}

// timeouts are the effective per-phase timeouts of a connection.
type timeouts struct {
	connect, banner, ehlo, startTLS, auth time.Duration
	mailFrom, rcptTo, data, dataDot, rset time.Duration
}

func resolveTimeouts(cfg *shaping.PathConfig, rset time.Duration) timeouts {
	def := shaping.Default()
	pick := func(v, d time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return d
	}
	return timeouts{
		connect:  pick(cfg.ConnectTimeout, def.ConnectTimeout),
		banner:   pick(cfg.BannerTimeout, def.BannerTimeout),
		ehlo:     pick(cfg.EHLOTimeout, def.EHLOTimeout),
		startTLS: pick(cfg.StartTLSTimeout, def.StartTLSTimeout),
		auth:     pick(cfg.AuthTimeout, def.AuthTimeout),
		mailFrom: pick(cfg.MailFromTimeout, def.MailFromTimeout),
		rcptTo:   pick(cfg.RcptToTimeout, def.RcptToTimeout),
		data:     pick(cfg.DataTimeout, def.DataTimeout),
		dataDot:  pick(cfg.DataDotTimeout, def.DataDotTimeout),
		rset:     pick(rset, DefaultRSETTimeout),
	}
}

// hostname is the EHLO name of last resort: the host name, or "localhost"
// when it cannot be used.
var hostname = sync.OnceValue(func() string {
	if h, err := os.Hostname(); err == nil && checkEHLOName(h) == nil {
		return h
	}
	return "localhost"
})

// dialer carries the resolved DialOptions of one Dial.
type dialer struct {
	opts     DialOptions
	source   EgressSource
	mode     shaping.TLSMode
	tlsCfg   *tls.Config
	sts      *MTASTSPolicy // the MTA-STS policy in force, if any
	dane     map[string]daneState
	port     int
	ehlo     string
	tmo      timeouts
	log      *slog.Logger
	prohibit []netip.Prefix
	skip     []netip.Prefix
	// maxDeliveries is max_deliveries_per_connection; negative means no
	// limit.
	maxDeliveries int
}

type candidate struct {
	host   string
	addr   netip.Addr
	secure bool // MXHost.Secure
}

// failure kinds, for KumoMTA's summary of why every candidate failed.
type failKind int

const (
	failOther failKind = iota
	failInsecureTLS
	failUnplumbed
)

type attemptError struct {
	kind failKind
	text string
	err  error
	// tlsFailed: the TLS handshake, or the EHLO after it, failed.
	tlsFailed bool
}

// Dial connects to the first usable address of opts.Hosts: it tries each
// host's addresses in order, reads the banner, says EHLO, applies the TLS
// mode of opts.Config.EnableTLS and returns the connection ready for Send.
//
// Before connecting, as KumoMTA does: if any address is in the path's
// prohibited_hosts the destination is refused permanently (550 5.4.4,
// ErrProhibitedHost); addresses in skip_hosts are dropped, and if none
// remain the result is 451 4.4.4 (ErrAllHostsSkipped); no addresses at all
// is "451 4.4.4 MX didn't resolve to any hosts" (ErrNoAddresses).
//
// A candidate that fails (refused or timed-out connection, a banner or
// EHLO that is not 2xx, garbage, a failed STARTTLS) is closed and the next
// one tried. When all fail, the error's Response is KumoMTA's transient
// "400 KumoMTA internal: failed to connect to any candidate hosts: ..."
// listing each failure. Every error is a *ResponseError (see ResponseOf);
// it wraps the context's error when ctx ended the attempt.
func Dial(ctx context.Context, opts DialOptions) (*Conn, error) {
	d, err := newDialer(opts)
	if err != nil {
		return nil, err
	}
	if err := d.applyMTASTS(ctx); err != nil {
		return nil, err
	}
	cands, rerr := d.candidates()
	if rerr != nil {
		return nil, rerr
	}
	var (
		texts []string
		kinds []failKind
		errs  []error
	)
	for _, cand := range cands {
		if ctx.Err() != nil {
			break
		}
		c, aerr := d.attempt(ctx, cand, false)
		if eff := d.hostMode(d.dane[cand.host]); aerr != nil && aerr.tlsFailed &&
			d.opts.Config.OpportunisticTLSReconnectOnFailedHandshake &&
			(eff == shaping.Opportunistic || eff == shaping.OpportunisticInsecure) && ctx.Err() == nil {
			d.log.Debug("egress: STARTTLS failed; reconnecting in clear text", "host", cand.host,
				"addr", cand.addr.String(), "error", aerr.text)
			texts = append(texts, "TLS handshake failed: "+aerr.text+", will re-connect in the clear because "+
				"opportunistic_tls_reconnect_on_failed_handshake=true")
			kinds = append(kinds, aerr.kind)
			errs = append(errs, aerr.err)
			c, aerr = d.attempt(ctx, cand, true)
		}
		if aerr == nil {
			return c, nil
		}
		d.log.Debug("egress: connection attempt failed", "source", d.source.Name(), "host", cand.host,
			"addr", cand.addr.String(), "port", d.port, "error", aerr.text)
		texts = append(texts, aerr.text)
		kinds = append(kinds, aerr.kind)
		errs = append(errs, aerr.err)
	}
	if err := ctx.Err(); err != nil && (len(errs) == 0 || !errors.Is(errs[len(errs)-1], err)) {
		texts = append(texts, context.Cause(ctx).Error())
		kinds = append(kinds, failOther)
		errs = append(errs, err)
	}
	resp := internal(400, "", "failed to connect to any candidate hosts: %s%s",
		failureSummary(kinds), strings.Join(texts, ", "))
	return nil, &ResponseError{Response: resp, Err: errors.Join(errs...)}
}

// failureSummary is KumoMTA's explanation when every failure has the same
// recognised cause.
func failureSummary(kinds []failKind) string {
	if len(kinds) == 0 {
		return ""
	}
	for _, k := range kinds[1:] {
		if k != kinds[0] {
			return ""
		}
	}
	switch kinds[0] {
	case failInsecureTLS:
		return "All failures are related to OpportunisticInsecure STARTTLS. " +
			"Consider setting enable_tls=Disabled for this site. "
	case failUnplumbed:
		return "All failures are related to having an unplumbed source address. " +
			"Are the network interfaces provisioned correctly? "
	}
	return ""
}

func newDialer(opts DialOptions) (*dialer, error) {
	bad := func(format string, args ...any) error {
		return &ResponseError{Response: internal(400, "", "invalid egress configuration: "+format, args...)}
	}
	d := &dialer{opts: opts, source: opts.Source, log: opts.Logger}
	if d.source == nil {
		d.source = DefaultSource()
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	cfg := &opts.Config
	d.mode = cfg.EnableTLS
	switch d.mode {
	case "":
		d.mode = shaping.Opportunistic
	case shaping.Opportunistic, shaping.OpportunisticInsecure, shaping.Required, shaping.RequiredInsecure, shaping.Disabled:
	default:
		return nil, bad("unknown enable_tls mode %q", d.mode)
	}
	switch {
	case opts.Port != 0:
		d.port = opts.Port
	default:
		if rp, ok := d.source.(remotePorter); ok && rp.RemotePort() != 0 {
			d.port = rp.RemotePort()
		} else if cfg.SMTPPort != 0 {
			d.port = cfg.SMTPPort
		} else {
			d.port = 25
		}
	}
	if d.port <= 0 || d.port > 65535 {
		return nil, bad("port %d out of range", d.port)
	}
	d.ehlo = cfg.EHLODomain
	if d.ehlo == "" {
		d.ehlo = d.source.EHLODomain()
	}
	if d.ehlo == "" {
		d.ehlo = opts.Hostname
	}
	if d.ehlo == "" {
		d.ehlo = hostname()
	}
	if err := checkEHLOName(d.ehlo); err != nil {
		return nil, bad("EHLO name: %v", err)
	}
	d.tmo = resolveTimeouts(cfg, opts.RSETTimeout)
	tc, err := clientTLSConfig(opts.TLSConfig, cfg)
	if err != nil {
		return nil, bad("%v", err)
	}
	d.tlsCfg = tc
	d.prohibit = cfg.ProhibitedHosts
	if d.prohibit == nil {
		d.prohibit = shaping.Default().ProhibitedHosts
	}
	d.skip = cfg.SkipHosts
	d.maxDeliveries = cfg.MaxDeliveriesPerConnection
	if d.maxDeliveries == 0 {
		d.maxDeliveries = shaping.Default().MaxDeliveriesPerConnection
	}
	return d, nil
}

// candidates applies prohibited_hosts and skip_hosts to the hosts'
// addresses.
func (d *dialer) candidates() ([]candidate, error) {
	var all []candidate
	var hostErrs []error
	for _, h := range d.opts.Hosts {
		for _, a := range h.Addrs {
			all = append(all, candidate{host: h.Name, addr: a.Unmap(), secure: h.Secure})
		}
		if len(h.Addrs) == 0 && h.Err != nil {
			hostErrs = append(hostErrs, h.Err)
		}
	}
	if len(all) == 0 {
		return nil, &ResponseError{
			Response: Response{Code: 451, Enhanced: "4.4.4", Text: "MX didn't resolve to any hosts"},
			Err:      errors.Join(append(hostErrs, ErrNoAddresses)...),
		}
	}
	for _, c := range all {
		if inPrefixes(d.prohibit, c.addr) {
			return nil, &ResponseError{
				Response: Response{Code: 550, Enhanced: "5.4.4",
					Text: fmt.Sprintf("%s/%s is on the list of prohibited_hosts %s", c.host, c.addr, prefixList(d.prohibit))},
				Err: ErrProhibitedHost,
			}
		}
	}
	out := all[:0:0]
	for _, c := range all {
		if !inPrefixes(d.skip, c.addr) {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, &ResponseError{
			Response: internal(451, "4.4.4", "MX consisted solely of hosts on the skip_hosts list"),
			Err:      ErrAllHostsSkipped,
		}
	}
	return out, nil
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// attempt connects to one candidate and brings the session up to the point
// where mail transactions can start.
func (d *dialer) attempt(ctx context.Context, cand candidate, clear bool) (*Conn, *attemptError) {
	ap := netip.AddrPortFrom(cand.addr, uint16(d.port))
	label := cand.host + "/" + ap.String()
	fail := func(kind failKind, err error, format string, args ...any) *attemptError {
		return &attemptError{kind: kind, text: fmt.Sprintf(format, args...), err: err}
	}

	dane, ok := d.dane[cand.host]
	if !ok {
		var err error
		if dane, err = d.daneFor(ctx, cand.host, cand.secure); err != nil {
			return nil, fail(failOther, err, "%v", err)
		}
		if d.dane == nil {
			d.dane = map[string]daneState{}
		}
		d.dane[cand.host] = dane
	}

	dctx, cancel := context.WithTimeout(ctx, d.tmo.connect)
	nc, err := d.source.Dial(dctx, "tcp", ap.String())
	cancel()
	if err != nil {
		kind := failOther
		var ue *unplumbedError
		if errors.As(err, &ue) {
			kind = failUnplumbed
		}
		var ne net.Error
		if ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("timeout after %v while connecting: %w", d.tmo.connect, err)
		}
		return nil, fail(kind, err, "connect to %s and read initial banner: %v", label, err)
	}
	c := &Conn{
		tmo:           d.tmo,
		site:          d.opts.Site,
		ignore8bit:    d.opts.Ignore8BitChecks,
		log:           d.log,
		maxDeliveries: d.maxDeliveries,
		raw:           nc,
		nc:            nc,
		br:            bufio.NewReaderSize(nc, readBufferSize),
		bw:            bufio.NewWriterSize(nc, 4096),
		info: ConnInfo{
			MTASTS:    d.stsModeWith(dane),
			DANE:      dane.result,
			Source:    d.source.Name(),
			Host:      cand.host,
			Addr:      ap,
			LocalAddr: addrPortOf(nc.LocalAddr()),
			Proxy:     proxyInfoOf(nc),
			EHLOName:  d.ehlo,
		},
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	closeWith := func(kind failKind, err error, format string, args ...any) (*Conn, *attemptError) {
		stop()
		_ = nc.Close()
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, fail(kind, err, format, args...)
	}

	_ = nc.SetReadDeadline(time.Now().Add(d.tmo.banner))
	banner, err := readReply(c.br)
	if err != nil {
		err = &ioError{timeout: d.tmo.banner, err: err}
		return closeWith(failOther, err, "connect to %s and read initial banner: %v", label, err)
	}
	c.info.Banner = banner
	if banner.Code != 220 {
		err := &rejectedError{banner}
		return closeWith(failOther, err, "connect to %s and read initial banner: %v", label, err)
	}
	if err := c.hello(d.ehlo); err != nil {
		return closeWith(failOther, err, "%s: EHLO after banner: %v", label, err)
	}

	mode := d.hostMode(dane)
	if clear {
		mode = shaping.Disabled
	}
	_, offered := c.ext["STARTTLS"]
	var useTLS, verify bool
	switch mode {
	case shaping.Disabled:
	case shaping.Required, shaping.RequiredInsecure:
		if !offered {
			return closeWith(failOther, errors.New("STARTTLS not advertised"),
				"tls policy is %s but STARTTLS is not advertised by %s", mode, label)
		}
		useTLS, verify = true, mode == shaping.Required
	case shaping.Opportunistic, shaping.OpportunisticInsecure:
		useTLS, verify = offered, mode == shaping.Opportunistic
		if useTLS && d.opts.BrokenTLS.Broken(d.opts.Site) {
			d.log.Debug("egress: not using STARTTLS: remembered as broken", "site", d.opts.Site, "host", cand.host)
			useTLS = false
		}
	}
	if useTLS {
		// tlsFailure fails the attempt after a broken handshake, or a broken
		// session after it: the site's TLS is remembered as broken, and the
		// caller may reconnect in clear text.
		tlsFailure := func(kind failKind, err error, format string, args ...any) (*Conn, *attemptError) {
			d.opts.BrokenTLS.Remember(d.opts.Site, d.opts.Config.RememberBrokenTLS)
			_, aerr := closeWith(kind, err, format, args...)
			aerr.tlsFailed = true
			return nil, aerr
		}
		if err := c.startTLS(cand.host, d.tlsCfg, verify, dane.tlsa); err != nil {
			var re *rejectedError
			switch {
			case errors.As(err, &re): // STARTTLS refused: no handshake took place
				return closeWith(failOther, err, "TLS handshake with %s failed: %v", label, err)
			case mode == shaping.OpportunisticInsecure:
				return tlsFailure(failInsecureTLS, err,
					"%s: OpportunisticInsecure STARTTLS handshake status: failed: %v", label, err)
			}
			return tlsFailure(failOther, err, "TLS handshake with %s failed: %v", label, err)
		}
		if err := c.hello(d.ehlo); err != nil {
			if mode == shaping.OpportunisticInsecure {
				return tlsFailure(failInsecureTLS, err,
					"%s: EHLO after OpportunisticInsecure STARTTLS handshake status: OK: %v", label, err)
			}
			return tlsFailure(failOther, err, "%s: EHLO after STARTTLS: %v", label, err)
		}
	}
	if d.opts.Config.SMTPAuthPlainUsername != "" {
		if err := c.authenticate(&d.opts.Config, label); err != nil {
			return closeWith(failOther, err, "%v", err)
		}
	}
	return d.established(ctx, c, stop)
}

// established hands over a connection that is ready, unless ctx ended
// (and closed it) meanwhile.
func (d *dialer) established(ctx context.Context, c *Conn, stop func() bool) (*Conn, *attemptError) {
	if !stop() {
		_ = c.raw.Close()
		return nil, &attemptError{text: context.Cause(ctx).Error(), err: ctx.Err()}
	}
	args := []any{"source", c.info.Source, "host", c.info.Host, "addr", c.info.Addr.String(), "tls", c.info.TLS != nil}
	if c.info.TLS != nil {
		args = append(args, "tls_version", c.info.TLS.Version, "tls_cipher", c.info.TLS.Cipher)
	}
	d.log.Debug("egress: connected", args...)
	return c, nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// rejectedError is a refusal by the peer during connection set-up.
type rejectedError struct{ resp Response }

func (e *rejectedError) Error() string { return "rejected: " + e.resp.String() }

// hello says EHLO (HELO when the peer answers 500 or 502, which means it
// does not know EHLO) and records the advertised extensions.
func (c *Conn) hello(name string) error {
	resp, err := c.roundTrip("EHLO "+name, c.tmo.ehlo)
	if err != nil {
		return err
	}
	if resp.Code == 500 || resp.Code == 502 {
		resp, err = c.roundTrip("HELO "+name, c.tmo.ehlo)
		if err != nil {
			return err
		}
		if resp.Code != 250 {
			return &rejectedError{resp}
		}
		c.ext = map[string]string{}
		return nil
	}
	if resp.Code != 250 {
		return &rejectedError{resp}
	}
	ext := make(map[string]string)
	lines := strings.Split(resp.Text, "\n")
	for _, l := range lines[1:] {
		kw, param, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw != "" {
			ext[strings.ToUpper(kw)] = param
		}
	}
	c.ext = ext
	return nil
}
