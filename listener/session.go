package listener

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// session is one SMTP connection's transaction state. go-smtp calls its
// methods from the connection's goroutine; mu guards the fields that
// Shutdown reads from another goroutine.
type session struct {
	l         *Listener
	conn      *smtp.Conn
	info      *SessionInfo
	peer      netip.Addr
	relayHost bool

	messages int // transactions accepted on this connection

	// Current transaction.
	sender       string
	senderDomain *ListenerDomain
	rcpts        []Recipient
	smtputf8     bool
	eightBit     bool

	// Listener domains looked up in this session, as KumoMTA caches them.
	domains map[string]*ListenerDomain

	mu        sync.Mutex
	inTxn     bool // between MAIL and the end of DATA
	closeNext bool // close once the current transaction is answered
}

// maxCachedDomains bounds the per-session listener-domain cache, as
// KumoMTA's (16).
const maxCachedDomains = 16

func (s *session) lookupDomain(domain string) (*ListenerDomain, error) {
	if d, ok := s.domains[domain]; ok {
		return d, nil
	}
	if s.l.cfg.Domains == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.l.cfg.ClientTimeout)
	defer cancel()
	d, err := s.l.cfg.Domains.LookupListenerDomain(ctx, domain, s.info.ListenerAddr)
	if err != nil {
		return nil, err
	}
	if s.domains == nil {
		s.domains = make(map[string]*ListenerDomain)
	}
	if len(s.domains) >= maxCachedDomains {
		clear(s.domains)
	}
	s.domains[domain] = d
	return d, nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.l.draining.Load() {
		return errShuttingDown
	}
	if s.messages >= s.l.cfg.MaxMessagesPerConnection {
		return s.reject(from, nil, &smtp.SMTPError{
			Code:         451,
			EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message:      fmt.Sprintf("too many messages on this connection (limit %d); reconnect", s.l.cfg.MaxMessagesPerConnection),
		})
	}
	if from != "" {
		_, domain, ok := splitAddress(from)
		if !ok {
			return s.reject(from, nil, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "malformed sender address"})
		}
		if !opts.UTF8 && !isASCII(from) {
			return s.reject(from, nil, errNeedSMTPUTF8)
		}
		d, err := s.lookupDomain(domain)
		if err != nil {
			s.l.log.Error("listener domain lookup failed", "domain", domain, "err", err)
			return errTempLookup
		}
		s.senderDomain = d
	}
	s.sender = from
	s.smtputf8 = opts.UTF8
	s.eightBit = opts.Body == smtp.Body8BitMIME
	s.mu.Lock()
	s.inTxn = true
	s.mu.Unlock()
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	_, domain, ok := splitAddress(to)
	if !ok || strings.Contains(domain, ":") && !strings.HasPrefix(domain, "[") {
		// A port in the domain (user@host:25) is a common abuse probe.
		return s.reject(s.sender, []string{to}, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "malformed recipient address"})
	}
	if !s.smtputf8 && !isASCII(to) {
		return s.reject(s.sender, []string{to}, errNeedSMTPUTF8)
	}
	d, err := s.lookupDomain(domain)
	if err != nil {
		s.l.log.Error("listener domain lookup failed", "domain", domain, "err", err)
		return errTempLookup
	}
	allowed := s.relayHost ||
		s.senderDomain.RelayFromAllows(s.peer) ||
		d != nil && (d.RelayTo || d.LogOOB.Enabled() || d.LogARF.Enabled())
	if !allowed {
		return s.reject(s.sender, []string{to}, errRelayDenied)
	}
	s.rcpts = append(s.rcpts, Recipient{Address: to, Domain: domain, ListenerDomain: d})
	return nil
}

func (s *session) Data(r io.Reader) error {
	buf := dataBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			dataBuffers.Put(buf)
		}
	}()

	if err := readData(r, buf, s.l.cfg.LineLengthLimit); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return s.reject(s.sender, s.addresses(), se)
		}
		// The client went away or timed out: nothing was stored.
		s.l.log.Debug("data read failed", "peer", s.info.PeerAddr, "err", err)
		return err
	}

	if st, ok := s.conn.TLSConnectionState(); ok {
		s.info.TLS = &st
	}
	msg := &Message{
		Sender:        s.sender,
		Recipients:    s.rcpts,
		Data:          buf.Bytes(),
		SMTPUTF8:      s.smtputf8,
		EightBitMIME:  s.eightBit,
		Session:       s.info,
		TraceHeaders:  s.l.cfg.TraceHeaders,
		BatchHandling: s.l.cfg.BatchHandling,
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.l.cfg.DataProcessingTimeout)
	defer cancel()
	ids, err := s.l.handler.HandleMessage(ctx, msg)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return s.reject(s.sender, s.addresses(), se)
		}
		s.l.log.Error("message not accepted", "peer", s.info.PeerAddr, "err", err)
		return s.reject(s.sender, s.addresses(), errTempFailure)
	}
	s.messages++
	// go-smtp sends a returned *SMTPError as the reply, whatever its code;
	// this is how the reply carries the IDs.
	return &smtp.SMTPError{
		Code:         250,
		EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message:      "OK ids=" + strings.Join(ids, " "),
	}
}

func (s *session) addresses() []string {
	out := make([]string, len(s.rcpts))
	for i, r := range s.rcpts {
		out[i] = r.Address
	}
	return out
}

// reject logs a rejection (when the handler wants them) and returns resp.
func (s *session) reject(sender string, rcpts []string, resp *smtp.SMTPError) error {
	if rl, ok := s.l.handler.(RejectionLogger); ok {
		rl.LogRejection(s.info, sender, rcpts, resp)
	}
	return resp
}

// Reset ends the transaction. go-smtp calls it after the reply to DATA has
// been written, which is when a draining session may close.
func (s *session) Reset() {
	s.sender, s.senderDomain, s.rcpts = "", nil, nil
	s.smtputf8, s.eightBit = false, false
	s.mu.Lock()
	s.inTxn = false
	closeNow := s.closeNext
	s.mu.Unlock()
	if closeNow {
		// Close the socket, not the smtp.Conn: go-smtp holds the Conn's
		// lock while calling Reset. The read loop then ends the session.
		s.conn.Conn().Close()
	}
}

func (s *session) Logout() error {
	s.l.forget(s)
	return nil
}

// closeIfIdle closes the connection with a 421 when no transaction is in
// progress, and otherwise arranges for it to close after the transaction.
func (s *session) closeIfIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inTxn {
		s.closeNext = true
		return
	}
	nc := s.conn.Conn()
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(nc, "421 4.3.2 %s service shutting down\r\n", s.info.Hostname)
	nc.Close()
}

var (
	errNeedSMTPUTF8 = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "non-ASCII address requires SMTPUTF8"}
	errTempLookup   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure looking up domain, try again later"}
	errTempFailure  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure, try again later"}
)

var dataBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer keeps one huge message from pinning its buffer forever.
const maxPooledBuffer = 1 << 20

// splitAddress splits local@domain at the last '@' and lower-cases the
// domain.
func splitAddress(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	return addr[:i], strings.ToLower(addr[i+1:]), true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
