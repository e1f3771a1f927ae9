package listener

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/internal/smtpd"
)

// session is one SMTP connection's transaction state. go-smtp calls its
// methods from the connection's goroutine; mu guards the fields that
// Shutdown reads from another goroutine.
type session struct {
	l         *Listener
	conn      *smtpd.Conn
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

	// mu also guards the transaction fields above when written: with
	// BDAT, go-smtp runs Data on its own goroutine, and a pipelined RSET
	// or MAIL can reach Reset or Mail while it is still running.
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
	ctx, cancel := s.l.hookContext(s.info)
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
	if shed := s.l.cfg.Shed; shed != nil {
		if reason := shed(); reason != "" {
			return s.reject(from, nil, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: reason + ", try again later"})
		}
	}
	if s.messages >= s.l.cfg.MaxMessagesPerConnection {
		return s.reject(from, nil, &smtp.SMTPError{
			Code:         451,
			EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message:      fmt.Sprintf("too many messages on this connection (limit %d); reconnect", s.l.cfg.MaxMessagesPerConnection),
		})
	}
	var senderDomain *ListenerDomain
	var domain string
	if from != "" {
		var ok bool
		_, domain, ok = splitAddress(from)
		if !ok {
			return s.reject(from, nil, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "malformed sender address"})
		}
		if !opts.UTF8 && !isASCII(from) {
			return s.reject(from, nil, errNeedSMTPUTF8)
		}
	}
	if h := s.l.cfg.Hooks.MailFrom; h != nil {
		ctx, cancel := s.l.hookContext(s.info)
		err := h(ctx, s.info, from)
		cancel()
		if err != nil {
			return s.reject(from, nil, s.l.hookReply(s.info, "mail", err))
		}
	}
	if from != "" {
		d, err := s.lookupDomain(domain)
		if err != nil {
			s.l.log.Error("listener domain lookup failed", "domain", domain, "err", err)
			return errTempLookup
		}
		senderDomain = d
	}
	s.mu.Lock()
	s.sender, s.senderDomain = from, senderDomain
	s.smtputf8 = opts.UTF8
	s.eightBit = opts.Body == smtp.Body8BitMIME
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
		s.senderDomain.RelayFromAuthzAllows(s.info.AuthzID()) ||
		d != nil && (d.RelayTo || d.LogOOB.Enabled() || d.LogARF.Enabled())
	if !allowed {
		return s.reject(s.sender, []string{to}, errRelayDenied)
	}
	if h := s.l.cfg.Hooks.RcptTo; h != nil {
		ctx, cancel := s.l.hookContext(s.info)
		err := h(ctx, s.info, to)
		cancel()
		if err != nil {
			return s.reject(s.sender, []string{to}, s.l.hookReply(s.info, "rcpt", err))
		}
	}
	s.mu.Lock()
	s.rcpts = append(s.rcpts, Recipient{Address: to, Domain: domain, ListenerDomain: d})
	s.mu.Unlock()
	return nil
}

func (s *session) Data(r io.Reader) error {
	// Take the envelope now: with BDAT this runs on its own goroutine,
	// concurrently with the session's next commands.
	s.mu.Lock()
	sender, rcpts, smtputf8, eightBit := s.sender, s.rcpts, s.smtputf8, s.eightBit
	s.mu.Unlock()

	buf := dataBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			dataBuffers.Put(buf)
		}
	}()

	r = &deadlineReader{r: r, conn: s.conn.Conn(), timeout: s.l.cfg.ClientTimeout}
	w := &budgetedBuffer{buf: buf, budget: s.l.cfg.Budget}
	defer w.done() // the handler has stored (or refused) the message by then
	if err := readData(r, w, s.l.cfg.LineLengthLimit); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return s.reject(sender, addresses(rcpts), se)
		}
		// The client went away or timed out: nothing was stored.
		s.l.log.Debug("data read failed", "peer", s.info.PeerAddr, "err", err)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			// go-smtp would answer any other error with a permanent
			// "554 5.0.0"; a stalled client gets a 421 and is cut off.
			s.mu.Lock()
			s.closeNext = true
			s.mu.Unlock()
			return errDataTimeout
		}
		return err
	}

	if w.over {
		s.l.log.Warn("reception memory budget exhausted; transaction deferred", "peer", s.info.PeerAddr, "budget", w.budget.Limit())
		return s.reject(sender, addresses(rcpts), errOverBudget)
	}
	msg := &Message{
		Meta:          s.info.MetaMap(),
		Sender:        sender,
		Recipients:    rcpts,
		Data:          buf.Bytes(),
		SMTPUTF8:      smtputf8,
		EightBitMIME:  eightBit,
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
			return s.reject(sender, addresses(rcpts), se)
		}
		s.l.log.Error("message not accepted", "peer", s.info.PeerAddr, "err", err)
		return s.reject(sender, addresses(rcpts), errTempFailure)
	}
	s.messages++
	// go-smtp sends a returned *SMTPError as the reply, whatever its code;
	// this is how the reply carries the IDs.
	return &smtp.SMTPError{
		Code:         250,
		EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message:      okReply(ids),
	}
}

// maxReplyLine is RFC 5321's limit on a reply line: 512 octets with the
// CRLF (section 4.5.3.1.5).
const maxReplyLine = 512

// okReply is KumoMTA's "OK ids=ID ..." for an accepted transaction. Many
// recipients can make many messages; when their IDs do not fit in one
// reply line, as many as fit are listed and the rest counted.
func okReply(ids []string) string {
	const prefix = "250 2.0.0 " // what go-smtp puts before the text
	text := "OK ids=" + strings.Join(ids, " ")
	if len(prefix)+len(text)+2 <= maxReplyLine {
		return text
	}
	var b strings.Builder
	b.WriteString("OK ids=")
	for i, id := range ids {
		sep := " "
		if i == 0 {
			sep = ""
		}
		tail := fmt.Sprintf(" (+%d more)", len(ids)-i-1) // if this id is the last that fits
		if len(prefix)+b.Len()+len(sep)+len(id)+len(tail)+2 > maxReplyLine {
			fmt.Fprintf(&b, " (+%d more)", len(ids)-i)
			break
		}
		b.WriteString(sep + id)
	}
	return b.String()
}

func addresses(rcpts []Recipient) []string {
	out := make([]string, len(rcpts))
	for i, r := range rcpts {
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
	s.mu.Lock()
	s.sender, s.senderDomain, s.rcpts = "", nil, nil
	s.smtputf8, s.eightBit = false, false
	s.inTxn = false
	// A transaction that ends while the listener drains closes the
	// session, whether or not Shutdown has reached this session yet
	// (closeNext); otherwise it could end just before that and the
	// session would get a 421 instead of a close after its reply.
	closeNow := s.closeNext || s.l.draining.Load()
	s.mu.Unlock()
	if closeNow {
		// Close the socket, not the smtpd.Conn: go-smtp holds the Conn's
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
	errDataTimeout  = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "timeout waiting for message data, closing connection"}
)

// deadlineReader renews the connection's read deadline before each read
// of the message data. go-smtp sets the deadline once, when it reads the
// DATA or BDAT command, which would make ClientTimeout bound the whole
// transfer of a message; with this it bounds each read of at most
// maxDataRead octets instead.
type deadlineReader struct {
	r       io.Reader
	conn    net.Conn
	timeout time.Duration
	start   time.Time
	n       int64 // octets read so far
}

// maxDataRead bounds each Read. go-smtp's DATA reader returns only when
// the buffer is full (or at the end of the data), so the deadline really
// bounds the time to receive maxDataRead octets: with the default
// ClientTimeout a client must send at least 17 octets per second.
const maxDataRead = 1024

// Read reads with two deadlines: ClientTimeout for this read, and an
// average-rate bound over the whole message — maxDataRead octets per
// ClientTimeout, after one ClientTimeout of grace. go-smtp's BDAT reader
// returns whatever arrived, so without the second bound a client sending
// one octet just before each deadline could hold the connection forever.
func (d *deadlineReader) Read(p []byte) (int, error) {
	if len(p) > maxDataRead {
		p = p[:maxDataRead]
	}
	now := time.Now()
	if d.start.IsZero() {
		d.start = now
	}
	deadline := now.Add(d.timeout)
	earned := time.Duration(float64(d.n) / maxDataRead * float64(d.timeout))
	if avg := d.start.Add(d.timeout + earned); avg.Before(deadline) {
		deadline = avg
	}
	_ = d.conn.SetReadDeadline(deadline)
	n, err := d.r.Read(p)
	d.n += int64(n)
	return n, err
}

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
