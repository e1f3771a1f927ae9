package smtpsink

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// backend is the go-smtp Backend of a sink.
type backend struct{ s *Sink }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sc := unwrapConn(c.Conn())
	if sc == nil {
		return nil, errors.New("smtpsink: connection not accepted by the sink")
	}
	_, isTLS := c.TLSConnectionState()
	ss := &session{s: b.s, c: c, sc: sc, ehlo: c.Hostname(), tls: isTLS}
	if err := ss.fault(StageEHLO, nil); err != nil {
		return nil, err
	}
	return ss, nil
}

// session is one EHLO..QUIT span of a connection (STARTTLS starts a new one).
type session struct {
	s    *Sink
	c    *smtp.Conn
	sc   *sinkConn
	ehlo string
	tls  bool

	mu   sync.Mutex // go-smtp may run Data (BDAT) and Reset on different goroutines
	user string     // authenticated user (Options.Auth)
	txn  int
	from string
	to   []string
}

var _ smtp.Session = (*session)(nil)

func (ss *session) Reset() {
	ss.mu.Lock()
	ss.from = ""
	ss.to = ss.to[:0]
	ss.mu.Unlock()
}

func (ss *session) Logout() error { return nil }

var _ smtp.AuthSession = (*session)(nil)

// AuthMechanisms offers PLAIN and LOGIN when Options.Auth is set.
func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Auth == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// errAuthRequired is RFC 4954's reply (go-smtp's ErrAuthRequired is 502).
var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

var errBadCredentials = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}

// Auth checks credentials with Options.Auth.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if ss.s.opts.Auth == nil || ss.s.opts.Auth(user, pass) != nil {
			return errBadCredentials
		}
		ss.mu.Lock()
		ss.user = user
		ss.mu.Unlock()
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported mechanism"}
}

// loginServer is the server side of the LOGIN mechanism, which go-sasl
// implements only as a client.
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 { // initial response: the user name
			l.user, l.step = string(response), 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user, l.step = string(response), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(response))
	}
}

func (ss *session) authUser() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.user
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.Auth != nil && ss.authUser() == "" {
		return errAuthRequired
	}
	ss.mu.Lock()
	ss.txn++
	ss.from = from
	ss.to = ss.to[:0]
	ss.mu.Unlock()
	return ss.fault(StageMail, nil)
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.fault(StageRcpt, func(e *Envelope) { e.Rcpt = to }); err != nil {
		return err
	}
	ss.mu.Lock()
	ss.to = append(ss.to, to)
	ss.mu.Unlock()
	return nil
}

func (ss *session) Data(r io.Reader) error {
	if err := ss.fault(StageDataStart, nil); err != nil {
		return err
	}
	s := ss.s
	buf, _ := s.bufPool.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer func() {
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			s.bufPool.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		// ErrDataTooLarge is an *smtp.SMTPError: returned as is.
		return err
	}
	data := buf.Bytes()

	d := ss.decide(StageData, func(e *Envelope) { e.data = data })
	var seq int64 // queue number; 0 until recorded
	if d != nil {
		if d.deliver {
			seq = ss.record(data)
		}
		if err := s.act(d, StageData, ss.c.Conn(), ss.sc); err != nil {
			return err
		}
	}
	if seq == 0 {
		seq = ss.record(data)
	}
	return &smtp.SMTPError{
		Code:         250,
		EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message:      "OK: queued as S" + strconv.FormatInt(seq, 10),
	}
}

// fault applies the fault for stage, if any: nil to proceed, or the error
// to hand go-smtp. fill completes the Envelope for Match functions.
func (ss *session) fault(st Stage, fill func(*Envelope)) error {
	d := ss.decide(st, fill)
	if d == nil {
		return nil
	}
	return ss.s.act(d, st, ss.c.Conn(), ss.sc)
}

// decide finds the fault for an event: explicit faults first, then the
// magic recipients, then the Mix.
func (ss *session) decide(st Stage, fill func(*Envelope)) *decision {
	s := ss.s
	var env Envelope
	envFilled := false
	if s.hasFaults() || st == StageRcpt {
		ss.mu.Lock()
		env = Envelope{
			Stage: st, ConnSeq: ss.sc.seq, RemoteAddr: ss.sc.remote, EHLO: ss.ehlo, TLS: ss.tls,
			Txn: ss.txn, From: ss.from, To: ss.to,
		}
		ss.mu.Unlock()
		if fill != nil {
			fill(&env)
		}
		envFilled = true
	}
	if s.hasFaults() {
		if d := s.matchFault(&env); d != nil {
			return d
		}
	}
	if st == StageRcpt && envFilled && !s.opts.DisableMagic {
		if d := magicDecision(env.Rcpt); d != nil {
			return d
		}
	}
	return s.mixDecision(st)
}

// record accounts for an accepted message and returns its queue number.
func (ss *session) record(data []byte) int64 {
	ss.mu.Lock()
	from := ss.from
	to := append([]string(nil), ss.to...)
	ss.mu.Unlock()
	return ss.s.record(ss, from, to, data)
}
