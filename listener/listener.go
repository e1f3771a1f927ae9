// Package listener receives mail over ESMTP.
//
// A [Listener] speaks ESMTP on one address with PIPELINING, 8BITMIME,
// SMTPUTF8, SIZE, CHUNKING, ENHANCEDSTATUSCODES and optional STARTTLS. Its
// protocol engine is the server of github.com/emersion/go-smtp v0.25.1, in
// a patched copy (internal/smtpd; "go-smtp" below means that copy) whose
// types are go-smtp's own. It decides per recipient whether relaying is
// allowed, the way KumoMTA does:
//
//   - the client's address is in [Config.RelayHosts] (default: loopback), or
//   - the sender's domain has a [ListenerDomain] whose RelayFrom holds the
//     client's address, or
//   - the recipient's domain has a ListenerDomain with RelayTo set, or it
//     accepts out-of-band bounces (LogOOB) or feedback reports (LogARF), or
//   - the client authenticated (SMTP AUTH) with an authorization identity
//     listed in the sender domain's RelayFromAuthz.
//
// Anything else is refused with "550 5.7.1 relaying not permitted".
//
// [Hooks] let the program check each phase of a session — the connection,
// HELO/EHLO (and the extensions offered), AUTH PLAIN, MAIL FROM and RCPT
// TO — as KumoMTA's smtp_server_* events do: a hook answers with an
// *smtp.SMTPError, and any other hook error is a transient 451. Each
// connection has a [SessionInfo] whose connection meta (SessionInfo.Meta,
// SetMeta; KumoMTA's conn_meta keys received_from, received_via,
// hostname, ehlo_domain, tls_cipher, tls_protocol_version, authn_id,
// authz_id) lives for the whole connection, across STARTTLS, and is
// copied into each [Message] (Message.Meta). AUTH PLAIN is offered when
// Hooks.AuthPlain is set, and only after STARTTLS unless
// Config.AllowInsecureAuth. Listener-domain lookups see the session
// through [ContextSession].
//
// DATA ends at the first <CRLF>.<CRLF>, and each line before it that
// starts with a period loses only that period (RFC 5321 section 4.5.2): a
// line ".<CR>X" is the data "<CR>X", and "<CRLF>.<CR><CR><LF>.<CRLF>" ends
// the data after "<CR><CR><LF>" (go-smtp v0.25.1 dropped such a CR, or read
// on past the end; internal/smtpd fixes both). BDAT chunks are taken as
// sent. The message data is then checked before it is handed on: a bare CR
// or LF (the raw material of SMTP smuggling), a NUL or a line longer than
// [Config.LineLengthLimit] is refused with a 552 5.6.0 reply, so no peer
// can ever split the accepted bytes into messages differently than we do,
// and nothing is silently rewritten.
//
// Accepted transactions go to a [Handler], which stores the message and
// returns its IDs; only then does the client get its 250 reply. The
// listener holds no message state of its own.
package listener

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/internal/smtpd"
)

// Handler accepts the messages a Listener receives.
type Handler interface {
	// HandleMessage stores msg durably and returns the IDs it was given
	// (one per spooled message). A returned *smtp.SMTPError is sent to the
	// client as is; any other error becomes "451 4.3.0" and is logged.
	// msg.Data is only valid until HandleMessage returns.
	HandleMessage(ctx context.Context, msg *Message) ([]string, error)
}

// RejectionLogger is implemented by Handlers that want to log the
// rejections the listener answers on its own (relay refused, malformed
// data, ...), as KumoMTA's Rejection records.
type RejectionLogger interface {
	LogRejection(info *SessionInfo, sender string, recipients []string, resp *smtp.SMTPError)
}

// SessionInfo describes the SMTP session a message arrived on.
type SessionInfo struct {
	// ID identifies the session in logs (a random UUID).
	ID string
	// ListenerAddr is the configured listen address ("IP:PORT"), which is
	// what listener-specific listener domains are keyed by.
	ListenerAddr string
	LocalAddr    netip.AddrPort
	PeerAddr     netip.AddrPort
	// EHLO is the name the client gave in HELO/EHLO.
	EHLO string
	// Hostname is our own name, as announced.
	Hostname string
	// TLS is non-nil when the session is encrypted.
	TLS *tls.ConnectionState

	// meta is the connection meta (Meta, SetMeta), shared by copies.
	meta *connMeta
}

// Recipient is one accepted RCPT TO.
type Recipient struct {
	Address string
	// Domain is the lower-case domain part of Address.
	Domain string
	// ListenerDomain is the entry found for Domain, or nil.
	ListenerDomain *ListenerDomain
}

// Message is one accepted SMTP transaction.
type Message struct {
	// Sender is the envelope sender; "" is the null reverse-path.
	Sender     string
	Recipients []Recipient
	// Data is the message as received, CRLF line endings, dot-unstuffed.
	Data []byte
	// SMTPUTF8 and EightBitMIME record the MAIL FROM parameters.
	SMTPUTF8     bool
	EightBitMIME bool
	Session      *SessionInfo
	// Meta is a copy of the connection meta (SessionInfo.MetaMap) taken
	// when the data was received: the predefined keys and whatever hooks
	// set. Handlers start each message's meta from it, as KumoMTA copies
	// conn_meta into message meta.
	Meta map[string]any

	TraceHeaders  TraceHeaders
	BatchHandling BatchHandling
}

// Listener is an ESMTP server on one address.
type Listener struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	srv     *smtpd.Server
	ln      net.Listener

	draining atomic.Bool
	mu       sync.Mutex
	sessions map[*session]struct{}
}

// Listen validates cfg, binds its address and returns a Listener ready to
// Serve. Binding here, not in Serve, makes a busy port an immediate error.
func Listen(cfg Config, h Handler, log *slog.Logger) (*Listener, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("listener: nil Handler")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listener: listen on %s: %w", cfg.Addr, err)
	}
	return NewWithListener(cfg, h, log, ln)
}

// NewWithListener is Listen on an existing net.Listener (for example one
// inherited from systemd, or bound to port 0 by a test). cfg.Addr is only
// used for naming; it defaults to ln's address.
func NewWithListener(cfg Config, h Handler, log *slog.Logger, ln net.Listener) (*Listener, error) {
	if cfg.Addr == "" {
		cfg.Addr = ln.Addr().String()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	l := &Listener{
		cfg:      cfg,
		handler:  h,
		log:      log.With("listener", cfg.Addr),
		sessions: make(map[*session]struct{}),
	}
	s := smtpd.NewServer(smtpd.BackendFunc(l.newSession))
	s.Domain = cfg.Hostname
	s.MaxMessageBytes = cfg.MaxMessageSize
	s.MaxRecipients = cfg.MaxRecipients
	s.ReadTimeout = cfg.ClientTimeout
	s.WriteTimeout = cfg.ClientTimeout
	s.EnableSMTPUTF8 = true
	s.TLSConfig = cfg.TLS
	s.AllowInsecureAuth = cfg.AllowInsecureAuth
	if cfg.Hooks.Connect != nil {
		s.Connect = l.connect
	}
	s.ErrorLog = slogPrinter{l.log}
	l.srv = s
	l.ln = &limitListener{Listener: ln, max: int64(cfg.MaxConnections), hostname: cfg.Hostname,
		greeting: []byte("220 " + cfg.Hostname + " " + cfg.Banner + "\r\n"),
		perIP:    cfg.MaxConnectionsPerIP, byIP: map[netip.Addr]int{}, shed: cfg.Shed}
	return l, nil
}

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Serve accepts connections until Shutdown or Close. It returns nil after
// a Shutdown or Close, and the accept error otherwise.
func (l *Listener) Serve() error {
	if l.draining.Load() {
		return nil
	}
	err := l.srv.Serve(l.ln)
	if errors.Is(err, smtpd.ErrServerClosed) || l.draining.Load() {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, closes idle sessions with a 421
// reply, lets transactions in progress finish (closing each session after
// its reply), and waits for every session to end or ctx to expire, when it
// closes the remaining connections and returns ctx's error.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.draining.Store(true)
	// Close the socket ourselves too: go-smtp only closes listeners that
	// Serve has registered, and Serve may not have started yet.
	l.ln.Close()
	done := make(chan error, 1)
	go func() { done <- l.srv.Shutdown(context.Background()) }()

	l.mu.Lock()
	for s := range l.sessions {
		s.closeIfIdle()
	}
	l.mu.Unlock()

	select {
	case err := <-done:
		if errors.Is(err, net.ErrClosed) || errors.Is(err, smtpd.ErrServerClosed) {
			err = nil
		}
		return err
	case <-ctx.Done():
		l.srv.Close()
		<-done
		return fmt.Errorf("listener %s: shutdown: %w", l.cfg.Addr, ctx.Err())
	}
}

// Close closes the listener and every connection immediately.
func (l *Listener) Close() error {
	l.draining.Store(true)
	l.ln.Close()
	err := l.srv.Close()
	if errors.Is(err, smtpd.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (l *Listener) newSession(c *smtpd.Conn) (smtp.Session, error) {
	info := l.connInfo(c)
	info.EHLO = c.Hostname()
	tlsMeta(info, c)
	peer := info.PeerAddr.Addr().Unmap()
	s := &session{
		l:         l,
		conn:      c,
		info:      info,
		peer:      peer,
		relayHost: prefixesContain(l.cfg.RelayHosts, peer),
	}
	l.mu.Lock()
	if l.draining.Load() {
		l.mu.Unlock()
		return nil, errShuttingDown
	}
	l.sessions[s] = struct{}{}
	l.mu.Unlock()
	return s, nil
}

func (l *Listener) forget(s *session) {
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
}

var errShuttingDown = &smtp.SMTPError{
	Code:         421,
	EnhancedCode: smtp.EnhancedCode{4, 3, 2},
	Message:      "service shutting down, try again later",
}

var errRelayDenied = &smtp.SMTPError{
	Code:         550,
	EnhancedCode: smtp.EnhancedCode{5, 7, 1},
	Message:      "relaying not permitted",
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// slogPrinter adapts slog to go-smtp's Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (p slogPrinter) Println(v ...any) { p.log.Warn(strings.TrimSpace(fmt.Sprintln(v...))) }

// limitListener refuses connections beyond max with KumoMTA's 421 reply.
type limitListener struct {
	net.Listener
	max      int64
	hostname string
	greeting []byte // "220 hostname banner", KumoMTA's greeting
	n        atomic.Int64
	perIP    int // 0: no per-address limit
	shed     func() string

	mu   sync.Mutex
	byIP map[netip.Addr]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.shed != nil {
			if reason := l.shed(); reason != "" {
				refuse(c, "421 4.3.2 "+l.hostname+" "+reason+". Try later")
				continue
			}
		}
		if l.n.Add(1) > l.max {
			l.n.Add(-1)
			refuse(c, "421 4.3.2 "+l.hostname+" too many concurrent sessions. Try later")
			continue
		}
		var ip netip.Addr
		if l.perIP > 0 {
			ip = remoteIP(c)
			l.mu.Lock()
			if l.byIP[ip] >= l.perIP {
				l.mu.Unlock()
				l.n.Add(-1)
				refuse(c, "421 4.7.0 "+l.hostname+" too many concurrent sessions from your address. Try later")
				continue
			}
			l.byIP[ip]++
			l.mu.Unlock()
		}
		return &countedConn{Conn: c, l: l, ip: ip, greeting: l.greeting}, nil
	}
}

func refuse(c net.Conn, reply string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\r\n", reply)
	c.Close()
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// release frees a connection's slots.
func (l *limitListener) release(ip netip.Addr) {
	l.n.Add(-1)
	if l.perIP > 0 {
		l.mu.Lock()
		if l.byIP[ip]--; l.byIP[ip] <= 0 {
			delete(l.byIP, ip)
		}
		l.mu.Unlock()
	}
}

// countedConn frees its connection slot on Close, and replaces go-smtp's
// fixed greeting ("220 host ESMTP Service Ready", its first write) with
// the configured one. Under implicit TLS the first write is the handshake
// and the greeting stays go-smtp's.
type countedConn struct {
	net.Conn
	l        *limitListener
	ip       netip.Addr
	once     sync.Once
	greeting []byte
	greeted  atomic.Bool
	// info is the connection's session state, which outlives go-smtp's
	// Session across STARTTLS (see Listener.connInfo). Only the
	// connection's goroutine sets it.
	info *SessionInfo
}

func (c *countedConn) Write(b []byte) (int, error) {
	if c.greeting != nil && !c.greeted.Swap(true) && bytes.HasPrefix(b, []byte("220 ")) && bytes.HasSuffix(b, []byte("\r\n")) && bytes.Count(b, []byte("\r\n")) == 1 {
		if _, err := c.Conn.Write(c.greeting); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}
