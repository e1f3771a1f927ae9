package smtpsink

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Stage is the point of the SMTP dialogue at which a fault applies.
type Stage int

// Stages, in dialogue order. The zero Stage is invalid for a Fault.
const (
	// StageConnect: the banner. Acts on the first write to a new connection.
	StageConnect Stage = iota + 1
	// StageEHLO: the first EHLO/HELO of a connection (and the first after
	// STARTTLS). A Reply with 500 or 502 makes go-smtp's client retry with
	// HELO, which is matched again.
	StageEHLO
	// StageStartTLS: the TLS handshake after "220 Ready to start TLS".
	StageStartTLS
	// StageMail: the MAIL FROM command.
	StageMail
	// StageRcpt: each RCPT TO command.
	StageRcpt
	// StageDataStart: after the 354 reply to DATA, before the body is read.
	// A Disconnect here drops the connection in the middle of the body.
	StageDataStart
	// StageData: after the final dot, before the reply; the message body is
	// available to Match through Envelope.Header and Envelope.Data.
	StageData
	stageEnd
)

var stageNames = [...]string{"invalid", "connect", "ehlo", "starttls", "mail", "rcpt", "data-start", "data"}

func (s Stage) String() string {
	if s <= 0 || s >= stageEnd {
		return "stage(" + strconv.Itoa(int(s)) + ")"
	}
	return stageNames[s]
}

// Action is what a fault does at its stage.
type Action int

const (
	// Reply answers Code/Enhanced/Text instead of the normal reply. Code
	// must be 4xx or 5xx, or 0 to let the stage proceed normally after Delay.
	Reply Action = iota
	// Disconnect closes the connection without a reply; if Code is set,
	// the reply line is written first (e.g. "421 4.4.2 bye", or a 220 banner
	// at StageConnect to close right after the banner).
	Disconnect
	// Hang never answers. The connection stays open until the client closes
	// it, the sink closes, Options.HangLimit passes or 1 MiB more input
	// arrives; then the sink closes it.
	Hang
	// Garbage writes Text verbatim (default GarbageText) and closes.
	Garbage
	actionEnd
)

var actionNames = [...]string{"reply", "disconnect", "hang", "garbage"}

func (a Action) String() string {
	if a < 0 || a >= actionEnd {
		return "action(" + strconv.Itoa(int(a)) + ")"
	}
	return actionNames[a]
}

// GarbageText is what a Garbage fault writes when Fault.Text is empty: a line
// that is not an SMTP reply.
const GarbageText = "* OK this is not an SMTP server \x01\x02\x03\r\n"

// Envelope is what a Matcher sees. Slices and the body are shared with the
// session: read them during the call only.
type Envelope struct {
	Stage      Stage
	ConnSeq    int64  // 1-based number of the connection since Start
	RemoteAddr string // client address
	EHLO       string // EHLO/HELO argument; empty at StageConnect
	TLS        bool   // the connection is using STARTTLS
	Txn        int    // 1-based number of the MAIL command on this connection (0 before MAIL)
	From       string // reverse path (StageMail and later)
	Rcpt       string // the recipient being considered (StageRcpt only)
	To         []string
	data       []byte
}

// Data returns the message as received (StageData only, else nil).
func (e *Envelope) Data() []byte { return e.data }

// Header returns the first value of the named header field of the message,
// unfolded and trimmed; "" if absent or before StageData.
func (e *Envelope) Header(name string) string { return headerValue(e.data, name) }

// Matcher selects what a fault applies to.
type Matcher func(*Envelope) bool

// MatchRcpt matches when a recipient address contains substr (ASCII
// case-insensitively): the recipient being considered at StageRcpt, any
// accepted recipient at StageDataStart and StageData. Never at other stages.
func MatchRcpt(substr string) Matcher {
	substr = strings.ToLower(substr)
	return func(e *Envelope) bool {
		return anyRcpt(e, func(r string) bool { return containsFold(r, substr) })
	}
}

// MatchLocalPart is MatchRcpt on the local part (before the last '@') only.
func MatchLocalPart(substr string) Matcher {
	substr = strings.ToLower(substr)
	return func(e *Envelope) bool {
		return anyRcpt(e, func(r string) bool { return containsFold(localPart(r), substr) })
	}
}

// MatchFrom matches when the reverse path contains substr (ASCII
// case-insensitively), from StageMail on.
func MatchFrom(substr string) Matcher {
	substr = strings.ToLower(substr)
	return func(e *Envelope) bool {
		return e.Stage >= StageMail && containsFold(e.From, substr)
	}
}

// MatchHeader matches at StageData when the named header's value contains
// substr (ASCII case-insensitively); substr "" matches any present header.
func MatchHeader(name, substr string) Matcher {
	substr = strings.ToLower(substr)
	return func(e *Envelope) bool {
		if e.Stage != StageData {
			return false
		}
		v := e.Header(name)
		return v != "" && containsFold(v, substr)
	}
}

func anyRcpt(e *Envelope, f func(string) bool) bool {
	switch e.Stage {
	case StageRcpt:
		return f(e.Rcpt)
	case StageDataStart, StageData:
		for _, r := range e.To {
			if f(r) {
				return true
			}
		}
	}
	return false
}

// Fault is a fault-injection rule. See the package documentation.
type Fault struct {
	Stage    Stage
	Match    Matcher // nil matches everything at Stage
	Action   Action
	Code     int               // SMTP reply code; see Action
	Enhanced smtp.EnhancedCode // zero: derived as X.0.0 from Code
	Text     string            // reply text, or the bytes a Garbage fault writes
	// Delay waits this long before the action (or before the normal reply
	// when Action is Reply and Code is 0).
	Delay time.Duration
	// Times limits the fault to its first Times matches; 0 means always.
	Times int
	// Deliver (StageData only) records the message as accepted before the
	// action runs, as if the reply were lost after queueing.
	Deliver bool
}

// FaultID identifies a fault added with AddFault.
type FaultID int

func (f *Fault) validate() error {
	if f.Stage <= 0 || f.Stage >= stageEnd {
		return fmt.Errorf("smtpsink: invalid fault stage %d", int(f.Stage))
	}
	if f.Action < 0 || f.Action >= actionEnd {
		return fmt.Errorf("smtpsink: invalid fault action %d", int(f.Action))
	}
	if f.Delay < 0 || f.Times < 0 {
		return errors.New("smtpsink: fault Delay and Times must not be negative")
	}
	switch f.Action {
	case Reply:
		if f.Code != 0 && (f.Code < 400 || f.Code > 599) {
			return fmt.Errorf("smtpsink: Reply fault code %d is not 4xx or 5xx", f.Code)
		}
	case Disconnect:
		if f.Code != 0 && (f.Code < 200 || f.Code > 599) {
			return fmt.Errorf("smtpsink: Disconnect fault code %d is not 2xx to 5xx", f.Code)
		}
	}
	if f.Deliver && f.Stage != StageData {
		return errors.New("smtpsink: Deliver is only valid at StageData")
	}
	if strings.ContainsAny(f.Text, "\r\n") && f.Action != Garbage {
		return errors.New("smtpsink: fault Text must be one line (except for Garbage)")
	}
	return nil
}

type faultEntry struct {
	id    FaultID
	fault Fault
	hits  int // guarded by Sink.faultMu
}

// decision is a fault resolved for one event.
type decision struct {
	action  Action
	code    int
	enh     smtp.EnhancedCode
	text    string
	delay   time.Duration
	deliver bool
	source  string // for logs: "fault 3", "magic", "mix"
}

func decisionOf(f *Fault, source string) *decision {
	return &decision{
		action: f.Action, code: f.Code, enh: f.Enhanced, text: f.Text,
		delay: f.Delay, deliver: f.Deliver, source: source,
	}
}

// replyLine renders the decision's reply as one SMTP line with CRLF.
func (d *decision) replyLine(st Stage) []byte {
	enh := d.enh
	if enh == smtp.EnhancedCodeNotSet {
		if c := d.code / 100; c == 2 || c == 4 || c == 5 {
			enh = smtp.EnhancedCode{c, 0, 0}
		} else {
			enh = smtp.NoEnhancedCode
		}
	}
	b := make([]byte, 0, 64)
	b = strconv.AppendInt(b, int64(d.code), 10)
	b = append(b, ' ')
	if enh != smtp.NoEnhancedCode {
		b = fmt.Appendf(b, "%d.%d.%d ", enh[0], enh[1], enh[2])
	}
	b = append(b, d.replyText(st)...)
	return append(b, '\r', '\n')
}

func (d *decision) replyText(st Stage) string {
	if d.text != "" {
		return d.text
	}
	return "smtpsink: injected " + d.action.String() + " at " + st.String()
}

func (d *decision) smtpError(st Stage) *smtp.SMTPError {
	return &smtp.SMTPError{Code: d.code, EnhancedCode: d.enh, Message: d.replyText(st)}
}

// AddFault adds a fault rule and returns its id. Rules are checked in the
// order added; the first one that matches (and has Times left) applies.
func (s *Sink) AddFault(f Fault) (FaultID, error) {
	if err := f.validate(); err != nil {
		return 0, err
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.nextFaultID++
	e := &faultEntry{id: FaultID(s.nextFaultID), fault: f}
	old := s.faultList()
	list := make([]*faultEntry, 0, len(old)+1)
	list = append(append(list, old...), e)
	s.faults.Store(&list)
	return e.id, nil
}

// MustAddFault is AddFault that panics on an invalid fault.
func (s *Sink) MustAddFault(f Fault) FaultID {
	id, err := s.AddFault(f)
	if err != nil {
		panic(err)
	}
	return id
}

// RemoveFault removes a fault; it reports whether it was present.
func (s *Sink) RemoveFault(id FaultID) bool {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	old := s.faultList()
	list := make([]*faultEntry, 0, len(old))
	for _, e := range old {
		if e.id != id {
			list = append(list, e)
		}
	}
	s.faults.Store(&list)
	return len(list) != len(old)
}

// ClearFaults removes every fault added with AddFault (not the magic
// recipients, not the Mix).
func (s *Sink) ClearFaults() {
	s.faultMu.Lock()
	s.faults.Store(nil)
	s.faultMu.Unlock()
}

// FaultHits returns how many times a fault has been applied (0 for an
// unknown or removed id).
func (s *Sink) FaultHits(id FaultID) int {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for _, e := range s.faultList() {
		if e.id == id {
			return e.hits
		}
	}
	return 0
}

// hasFaults reports whether explicit faults exist (an Envelope is needed).
func (s *Sink) hasFaults() bool { return len(s.faultList()) > 0 }

func (s *Sink) faultList() []*faultEntry {
	if p := s.faults.Load(); p != nil {
		return *p
	}
	return nil
}

// matchFault returns the first explicit fault for env, consuming one of its
// Times. Match functions run without locks held.
func (s *Sink) matchFault(env *Envelope) *decision {
	for _, e := range s.faultList() {
		if e.fault.Stage != env.Stage {
			continue
		}
		if e.fault.Match != nil && !e.fault.Match(env) {
			continue
		}
		s.faultMu.Lock()
		ok := e.fault.Times == 0 || e.hits < e.fault.Times
		if ok {
			e.hits++
		}
		s.faultMu.Unlock()
		if ok {
			return decisionOf(&e.fault, "fault "+strconv.Itoa(int(e.id)))
		}
	}
	return nil
}

// The magic recipients (KumoMTA-style), checked at RCPT after the explicit
// faults.
var (
	magicTempFail   = Fault{Stage: StageRcpt, Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Text: "tempfail requested"}
	magicPermFail   = Fault{Stage: StageRcpt, Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 1}, Text: "permfail requested"}
	magicDisconnect = Fault{Stage: StageRcpt, Action: Disconnect}
)

func magicDecision(rcpt string) *decision {
	lp := localPart(rcpt)
	switch {
	case containsFold(lp, "tempfail"):
		return decisionOf(&magicTempFail, "magic")
	case containsFold(lp, "permfail"):
		return decisionOf(&magicPermFail, "magic")
	case containsFold(lp, "disconnect"):
		return decisionOf(&magicDisconnect, "magic")
	}
	return nil
}

// Mix injects random faults at one stage with a seeded generator, for
// mixed-fault reliability runs. Each event at Stage draws one number: with
// probability TempFail it gets 451 4.3.0, PermFail 550 (5.1.1 at RCPT, else
// 5.7.1), Disconnect a dropped connection, Slow a normal reply after
// SlowDelay. The fractions must sum to at most 1. The zero Mix is off.
type Mix struct {
	Stage      Stage // StageMail, StageRcpt (default when zero) or StageData
	TempFail   float64
	PermFail   float64
	Disconnect float64
	Slow       float64
	SlowDelay  time.Duration // default 200ms
	Seed       uint64
}

func (m Mix) active() bool {
	return m.TempFail != 0 || m.PermFail != 0 || m.Disconnect != 0 || m.Slow != 0
}

func (m *Mix) normalize() error {
	if m.Stage == 0 {
		m.Stage = StageRcpt
	}
	switch m.Stage {
	case StageMail, StageRcpt, StageData:
	default:
		return fmt.Errorf("smtpsink: Mix stage must be mail, rcpt or data, not %v", m.Stage)
	}
	for _, p := range []float64{m.TempFail, m.PermFail, m.Disconnect, m.Slow} {
		if p < 0 || p > 1 {
			return errors.New("smtpsink: Mix fractions must be within [0, 1]")
		}
	}
	if m.TempFail+m.PermFail+m.Disconnect+m.Slow > 1+1e-9 {
		return errors.New("smtpsink: Mix fractions sum to more than 1")
	}
	if m.SlowDelay <= 0 {
		m.SlowDelay = 200 * time.Millisecond
	}
	return nil
}

type mixState struct {
	Mix
	mu  sync.Mutex
	rng *rand.Rand
}

// SetMix replaces the random fault mix (the zero Mix turns it off) and
// reseeds the generator.
func (s *Sink) SetMix(m Mix) error {
	if !m.active() {
		s.mix.Store(nil)
		return nil
	}
	if err := m.normalize(); err != nil {
		return err
	}
	s.mix.Store(&mixState{Mix: m, rng: rand.New(rand.NewPCG(m.Seed, m.Seed^0x9e3779b97f4a7c15))})
	return nil
}

func (s *Sink) mixDecision(st Stage) *decision {
	m := s.mix.Load()
	if m == nil || m.Stage != st {
		return nil
	}
	m.mu.Lock()
	u := m.rng.Float64()
	m.mu.Unlock()
	switch {
	case u < m.TempFail:
		return &decision{code: 451, enh: smtp.EnhancedCode{4, 3, 0}, text: "mix: temporary failure", source: "mix"}
	case u < m.TempFail+m.PermFail:
		enh := smtp.EnhancedCode{5, 7, 1}
		if st == StageRcpt {
			enh = smtp.EnhancedCode{5, 1, 1}
		}
		return &decision{code: 550, enh: enh, text: "mix: permanent failure", source: "mix"}
	case u < m.TempFail+m.PermFail+m.Disconnect:
		return &decision{action: Disconnect, source: "mix"}
	case u < m.TempFail+m.PermFail+m.Disconnect+m.Slow:
		return &decision{delay: m.SlowDelay, source: "mix"}
	}
	return nil
}

func localPart(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i]
	}
	return addr
}

// containsFold reports whether s contains lowerSub, comparing ASCII letters
// case-insensitively; lowerSub must already be lower case.
func containsFold(s, lowerSub string) bool {
	n := len(lowerSub)
	if n == 0 {
		return true
	}
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for j < n && lowerASCII(s[i+j]) == lowerSub[j] {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
