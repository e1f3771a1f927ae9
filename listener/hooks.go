package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"maps"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/uuid"

	"github.com/mtakit/mtakit/internal/smtpd"
)

// Hooks let the program take part in each phase of an SMTP session, as
// KumoMTA's smtp_server_* events do. Every hook is optional and runs on the
// session's goroutine, bounded by Config.ClientTimeout.
//
// A hook refuses by returning an *smtp.SMTPError, which is sent as the
// reply to that phase; any other error is logged and answered with a
// transient "451 4.3.0", so a failing policy defers mail rather than
// losing or wrongly refusing it. Refusals are logged through the
// Handler's RejectionLogger.
type Hooks struct {
	// Connect runs when a client connects, before the greeting. A refusal
	// is sent instead of the greeting and the connection closed (KumoMTA's
	// smtp_server_connection_accepted).
	Connect func(ctx context.Context, s *SessionInfo) error
	// EHLO runs for each HELO and EHLO, with the client's domain and the
	// extensions about to be advertised (nil for HELO). It returns the
	// extensions to advertise: return extensions to keep them
	// (smtp_server_ehlo). After a refusal the client must greet again.
	EHLO func(ctx context.Context, s *SessionInfo, domain string, extensions []string) ([]string, error)
	// MailFrom runs for MAIL FROM once the address is well-formed; sender
	// is "" for the null reverse-path. A refusal refuses the transaction
	// (smtp_server_mail_from).
	MailFrom func(ctx context.Context, s *SessionInfo, sender string) error
	// RcptTo runs for each RCPT TO the relay rules accept; a refusal
	// refuses that recipient (smtp_server_mail_rcpt_to).
	RcptTo func(ctx context.Context, s *SessionInfo, recipient string) error
	// AuthPlain checks SASL PLAIN credentials (smtp_server_auth_plain).
	// When set, AUTH PLAIN is offered, but only on TLS sessions unless
	// Config.AllowInsecureAuth is set. authz is the identity to act as;
	// an empty one is taken to be authc, as KumoMTA does. true answers
	// 235 and records authc and authz in the session meta as authn_id and
	// authz_id; false answers 535 5.7.8. An error that is not an
	// *smtp.SMTPError answers 454 4.7.0, RFC 4954's temporary
	// authentication failure.
	AuthPlain func(ctx context.Context, s *SessionInfo, authz, authc, password string) (bool, error)
}

// Connection meta keys the listener sets, as KumoMTA names them.
const (
	MetaReceptionProtocol = "reception_protocol"
	MetaReceivedVia       = "received_via"
	MetaReceivedFrom      = "received_from"
	MetaHostname          = "hostname"
	MetaEHLODomain        = "ehlo_domain"
	MetaTLSCipher         = "tls_cipher"
	MetaTLSVersion        = "tls_protocol_version"
	MetaAuthnID           = "authn_id"
	MetaAuthzID           = "authz_id"
)

// connMeta is a session's connection metadata. It is shared by the copies
// of a SessionInfo, and locked because a BDAT transaction's Handler runs
// concurrently with the session's next commands.
type connMeta struct {
	mu sync.Mutex
	m  map[string]any
}

// Meta returns the connection meta value of key, or nil.
func (s *SessionInfo) Meta(key string) any {
	if s.meta == nil {
		return nil
	}
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	return s.meta.m[key]
}

// SetMeta sets a connection meta value. Values should be JSON-like (nil,
// bool, numbers, string, []any, map[string]any); every message received
// afterwards on the session starts with a copy of the connection meta
// (Message.Meta), as in KumoMTA.
func (s *SessionInfo) SetMeta(key string, v any) {
	if s.meta == nil {
		s.meta = &connMeta{}
	}
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	if s.meta.m == nil {
		s.meta.m = map[string]any{}
	}
	s.meta.m[key] = v
}

// MetaMap returns a copy of the connection meta.
func (s *SessionInfo) MetaMap() map[string]any {
	if s.meta == nil {
		return map[string]any{}
	}
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	return maps.Clone(s.meta.m)
}

// AuthnID returns the identity the client authenticated as with SMTP AUTH,
// or "".
func (s *SessionInfo) AuthnID() string { v, _ := s.Meta(MetaAuthnID).(string); return v }

// AuthzID returns the identity an authenticated client acts as, or "".
func (s *SessionInfo) AuthzID() string { v, _ := s.Meta(MetaAuthzID).(string); return v }

type sessionKey struct{}

// ContextSession returns the session a listener-domain lookup is made
// for: Listener passes it in the context given to
// DomainLookup.LookupListenerDomain, so that lookups can depend on the
// connection meta (KumoMTA's conn_meta argument of get_listener_domain).
// It returns nil outside a session. A lookup whose answer depends on the
// session must not be cached across sessions; the listener caches answers
// per session and forgets them when the client authenticates.
func ContextSession(ctx context.Context) *SessionInfo {
	s, _ := ctx.Value(sessionKey{}).(*SessionInfo)
	return s
}

// WithSession returns ctx carrying s, as ContextSession reads it (for
// programs that call a DomainLookup themselves).
func WithSession(ctx context.Context, s *SessionInfo) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// connInfo returns the SessionInfo of c's connection, creating it on first
// use. go-smtp starts a new Session after STARTTLS; the SessionInfo (and
// with it the connection meta and ID) lives on the connection, as
// KumoMTA's conn_meta does.
func (l *Listener) connInfo(c *smtpd.Conn) *SessionInfo {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	cc, _ := nc.(*countedConn)
	if cc != nil && cc.info != nil {
		return cc.info
	}
	info := &SessionInfo{
		ID:           uuid.NewString(),
		ListenerAddr: l.cfg.Addr,
		LocalAddr:    addrPort(c.Conn().LocalAddr()),
		PeerAddr:     addrPort(c.Conn().RemoteAddr()),
		Hostname:     l.cfg.Hostname,
		meta:         &connMeta{m: map[string]any{}},
	}
	info.meta.m[MetaReceptionProtocol] = "ESMTP"
	info.meta.m[MetaReceivedVia] = info.LocalAddr.String()
	info.meta.m[MetaReceivedFrom] = info.PeerAddr.String()
	info.meta.m[MetaHostname] = info.Hostname
	maps.Copy(info.meta.m, l.cfg.Meta)
	if cc != nil {
		cc.info = info
	}
	return info
}

// hookContext bounds a hook call.
func (l *Listener) hookContext(info *SessionInfo) (context.Context, context.CancelFunc) {
	return context.WithTimeout(WithSession(context.Background(), info), l.cfg.ClientTimeout)
}

// hookReply turns a hook's error into the reply to send: the hook's own
// *smtp.SMTPError, or a logged 451 for anything else.
func (l *Listener) hookReply(info *SessionInfo, phase string, err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	l.log.Error("SMTP hook failed; answering with a temporary failure", "phase", phase, "peer", info.PeerAddr, "session", info.ID, "err", err)
	return errTempFailure
}

func (l *Listener) logRejection(info *SessionInfo, sender string, rcpts []string, resp *smtp.SMTPError) {
	if rl, ok := l.handler.(RejectionLogger); ok {
		rl.LogRejection(info, sender, rcpts, resp)
	}
}

// connect is smtpd.Server.Connect: it runs Hooks.Connect before the
// greeting.
func (l *Listener) connect(c *smtpd.Conn) error {
	info := l.connInfo(c)
	ctx, cancel := l.hookContext(info)
	defer cancel()
	err := l.cfg.Hooks.Connect(ctx, info)
	if err == nil {
		return nil
	}
	resp := l.hookReply(info, "connect", err)
	l.logRejection(info, "", nil, resp)
	return resp
}

// Greet implements smtpd.GreetSession: it records the EHLO domain and runs
// Hooks.EHLO.
func (s *session) Greet(domain string, extensions []string) ([]string, error) {
	s.info.EHLO = domain
	s.info.SetMeta(MetaEHLODomain, domain)
	h := s.l.cfg.Hooks.EHLO
	if h == nil {
		return extensions, nil
	}
	ctx, cancel := s.l.hookContext(s.info)
	defer cancel()
	out, err := h(ctx, s.info, domain, extensions)
	if err != nil {
		resp := s.l.hookReply(s.info, "ehlo", err)
		s.l.logRejection(s.info, "", nil, resp)
		return nil, resp
	}
	return out, nil
}

// AuthMechanisms implements smtpd.AuthSession. go-smtp offers them only on
// TLS sessions unless Config.AllowInsecureAuth.
func (s *session) AuthMechanisms() []string {
	if s.l.cfg.Hooks.AuthPlain == nil {
		return nil
	}
	return []string{sasl.Plain}
}

// Auth implements smtpd.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || s.l.cfg.Hooks.AuthPlain == nil {
		return nil, smtpd.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(s.authPlain), nil
}

var (
	errAuthFailed = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication credentials invalid"}
	errAuthTemp   = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "temporary authentication failure"}
)

func (s *session) authPlain(authz, authc, password string) error {
	if authz == "" {
		authz = authc
	}
	ctx, cancel := s.l.hookContext(s.info)
	defer cancel()
	ok, err := s.l.cfg.Hooks.AuthPlain(ctx, s.info, authz, authc, password)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		s.l.log.Error("AUTH hook failed; answering with a temporary failure", "peer", s.info.PeerAddr, "session", s.info.ID, "err", err)
		return errAuthTemp
	}
	if !ok {
		s.l.log.Info("SMTP AUTH failed", "peer", s.info.PeerAddr, "session", s.info.ID, "authc", authc)
		return errAuthFailed
	}
	s.info.SetMeta(MetaAuthnID, authc)
	s.info.SetMeta(MetaAuthzID, authz)
	// Listener domains looked up before may depend on the identity.
	clear(s.domains)
	return nil
}

// tlsMeta records the TLS parameters of a session in its meta.
func tlsMeta(info *SessionInfo, c *smtpd.Conn) {
	st, ok := c.TLSConnectionState()
	if !ok {
		return
	}
	info.TLS = &st
	info.SetMeta(MetaTLSCipher, tls.CipherSuiteName(st.CipherSuite))
	info.SetMeta(MetaTLSVersion, tls.VersionName(st.Version))
}
