package smtpsink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Defaults for Options fields left zero.
const (
	DefaultAddr            = "127.0.0.1:0"
	DefaultHostname        = "sink.localhost"
	DefaultMaxMessageBytes = 32 << 20
	DefaultKeyHeader       = "Message-ID"
	DefaultReadTimeout     = 2 * time.Minute
	DefaultWriteTimeout    = 30 * time.Second
	DefaultHangLimit       = 2 * time.Minute
	// DefaultWaitTimeout bounds Wait* calls whose context has no deadline.
	DefaultWaitTimeout = 30 * time.Second
)

// closeTimeout bounds how long Close waits for connection goroutines after
// closing every connection (they end at once in practice).
const closeTimeout = 10 * time.Second

// hangDiscardLimit is how much input a hanging connection swallows before
// the sink gives up and closes it.
const hangDiscardLimit = 1 << 20

// ErrClosed is returned by Wait* when the sink closes before the condition
// holds.
var ErrClosed = errors.New("smtpsink: sink closed")

// errDropped is returned to go-smtp after the sink closed a connection on
// purpose; go-smtp's attempt to write a reply then fails silently.
var errDropped = errors.New("smtpsink: connection dropped by fault")

// Options configures a sink. The zero value is a plain-text sink on
// 127.0.0.1 with a random port that counts but keeps no messages.
type Options struct {
	// Addr to listen on; the host must be a loopback IP, "localhost" or
	// empty (both mean 127.0.0.1). Default "127.0.0.1:0".
	Addr string
	// Hostname in the banner and EHLO reply. Default "sink.localhost".
	Hostname string
	// TLS advertises STARTTLS with a generated self-signed certificate
	// (see RootCAs) unless TLSConfig is set. Without TLS and TLSConfig the
	// sink does not offer STARTTLS.
	TLS bool
	// TLSConfig, if set, is used for STARTTLS (implies TLS).
	TLSConfig *tls.Config
	// Store keeps every accepted message for Messages.
	Store bool
	// Auth, if set, makes the sink require SMTP AUTH before MAIL FROM
	// (530 5.7.0 otherwise). AUTH PLAIN and LOGIN are advertised only
	// inside TLS, unless AllowInsecureAuth; Auth checks each credential
	// pair, and an error refuses it with 535 5.7.8. Message.AuthUser
	// records who authenticated.
	Auth func(username, password string) error
	// AllowInsecureAuth offers AUTH without TLS too.
	AllowInsecureAuth bool
	// MaxMessageBytes is advertised with SIZE and enforced (552 5.3.4).
	// 0 means DefaultMaxMessageBytes; negative means no limit.
	MaxMessageBytes int64
	// MaxRecipients per transaction (452 4.5.3 beyond); 0 = no limit.
	MaxRecipients int
	// KeyHeader names the header whose value identifies a message for
	// duplicate detection. Default "Message-ID".
	KeyHeader string
	// DisableMagic turns off the tempfail/permfail/disconnect recipients.
	DisableMagic bool
	// Mix is the initial random fault mix (see SetMix).
	Mix Mix
	// ReadTimeout is go-smtp's idle timeout per command. Default 2 minutes.
	ReadTimeout time.Duration
	// WriteTimeout bounds each reply write. Default 30 seconds.
	WriteTimeout time.Duration
	// HangLimit bounds how long a Hang fault holds a connection. Default
	// 2 minutes.
	HangLimit time.Duration
	// Logger receives Debug-level records of connections and faults, and
	// go-smtp's internal errors. Default: discard.
	Logger *slog.Logger
	// Debug, if set, receives go-smtp's wire trace.
	Debug io.Writer
	// Configure, if set, may adjust the go-smtp server before it starts
	// (e.g. extensions). The sink enables SMTPUTF8 and DSN by default.
	Configure func(*smtp.Server)
}

// Sink is a running SMTP sink. All methods are safe for concurrent use.
type Sink struct {
	opts    Options
	log     *slog.Logger
	ln      net.Listener
	srv     *smtp.Server
	rootCAs *x509.CertPool

	closing   chan struct{}
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error

	faults      atomic.Pointer[[]*faultEntry]
	faultMu     sync.Mutex // serializes fault list updates; guards hits, nextFaultID
	nextFaultID int
	mix         atomic.Pointer[mixState]

	hashSeed maphash.Seed
	bufPool  sync.Pool
	queueSeq atomic.Int64

	mu         sync.Mutex // guards everything below
	closed     bool
	conns      map[*sinkConn]struct{}
	connSeq    int64
	stats      Stats
	msgs       []Message
	deliveries map[uint64]uint32
	dups       map[uint64]*Duplicate
	notify     chan struct{} // closed and cleared on every change; nil when nobody waits
}

// Start validates opts, listens and serves until Close.
func Start(opts Options) (*Sink, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	s := &Sink{
		opts:       opts,
		log:        opts.Logger,
		closing:    make(chan struct{}),
		serveDone:  make(chan struct{}),
		hashSeed:   maphash.MakeSeed(),
		conns:      make(map[*sinkConn]struct{}),
		deliveries: make(map[uint64]uint32),
		dups:       make(map[uint64]*Duplicate),
	}
	if err := s.SetMix(opts.Mix); err != nil {
		return nil, err
	}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}

	srv := smtp.NewServer(backend{s})
	srv.Domain = opts.Hostname
	srv.TLSConfig = tlsCfg
	if opts.MaxMessageBytes > 0 {
		srv.MaxMessageBytes = opts.MaxMessageBytes
	}
	srv.MaxRecipients = opts.MaxRecipients
	srv.ReadTimeout = opts.ReadTimeout
	srv.WriteTimeout = opts.WriteTimeout
	srv.AllowInsecureAuth = s.opts.AllowInsecureAuth
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = smtpLogger{s.log}
	srv.Debug = opts.Debug
	if opts.Configure != nil {
		opts.Configure(srv)
	}
	s.srv = srv

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: %w", err)
	}
	s.ln = ln
	go func() {
		defer close(s.serveDone)
		_ = srv.Serve(&sinkListener{Listener: ln, s: s})
	}()
	s.log.Debug("smtpsink: listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
	return s, nil
}

func (o *Options) normalize() error {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return fmt.Errorf("smtpsink: bad Addr %q: %w", o.Addr, err)
	}
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("smtpsink: Addr %q is not a loopback address", o.Addr)
	}
	o.Addr = net.JoinHostPort(ip.String(), port)
	if o.Hostname == "" {
		o.Hostname = DefaultHostname
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.KeyHeader == "" {
		o.KeyHeader = DefaultKeyHeader
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.HangLimit <= 0 {
		o.HangLimit = DefaultHangLimit
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Addr returns the listening address, "127.0.0.1:port".
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Hostname returns the name the sink uses in its banner.
func (s *Sink) Hostname() string { return s.opts.Hostname }

// RootCAs returns a pool trusting the generated certificate (Options.TLS
// without TLSConfig), else nil.
func (s *Sink) RootCAs() *x509.CertPool { return s.rootCAs }

// Close stops the sink: it closes the listener and every connection,
// releases hanging and delayed connections, and waits for the goroutines
// serving them. It is safe to call more than once.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = err
		}
		<-s.serveDone // no Accept is running from here on

		s.mu.Lock()
		s.closed = true
		conns := make([]*sinkConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}

		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		// Shutdown waits for go-smtp's connection goroutines.
		if err := s.srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
			s.closeErr = fmt.Errorf("smtpsink: connections still busy %v after Close", closeTimeout)
		}

		s.mu.Lock()
		s.changedLocked()
		s.mu.Unlock()
		s.log.Debug("smtpsink: closed")
	})
	return s.closeErr
}

// sinkListener registers each accepted connection and decides its
// connection-stage fault.
type sinkListener struct {
	net.Listener
	s *Sink
}

func (l *sinkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.newConn(c), nil
}

func (s *Sink) newConn(raw net.Conn) *sinkConn {
	c := &sinkConn{Conn: raw, s: s, closed: make(chan struct{}), remote: raw.RemoteAddr().String()}
	s.mu.Lock()
	s.connSeq++
	c.seq = s.connSeq
	closed := s.closed
	if !closed {
		s.conns[c] = struct{}{}
		s.stats.Connections++
		if n := len(s.conns); n > s.stats.PeakConns {
			s.stats.PeakConns = n
		}
		s.changedLocked()
	}
	s.mu.Unlock()
	if closed {
		c.closeOnce.Do(func() { close(c.closed); _ = raw.Close() })
		return c
	}
	if s.hasFaults() {
		c.greet = s.matchFault(&Envelope{Stage: StageConnect, ConnSeq: c.seq, RemoteAddr: c.remote})
	}
	s.log.Debug("smtpsink: connection", "conn", c.seq, "remote", c.remote)
	return c
}

// sinkConn wraps every connection: it tracks it for Close, applies the
// connection-stage fault on the first write (the banner), and lets session
// callbacks close it.
type sinkConn struct {
	net.Conn
	s      *Sink
	seq    int64
	remote string
	greet  *decision // connection-stage fault; set before go-smtp sees the conn

	greeted   atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
	txns      int // accepted transactions; guarded by s.mu
}

func (c *sinkConn) Write(p []byte) (int, error) {
	if c.greet != nil && c.greeted.CompareAndSwap(false, true) {
		return c.writeGreeting(p)
	}
	return c.Conn.Write(p)
}

// writeGreeting applies the connection-stage fault to the banner p.
func (c *sinkConn) writeGreeting(p []byte) (int, error) {
	if err := c.s.act(c.greet, StageConnect, c.Conn, c); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *sinkConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
		s := c.s
		s.mu.Lock()
		if _, ok := s.conns[c]; ok {
			delete(s.conns, c)
			s.changedLocked()
		}
		s.mu.Unlock()
		s.log.Debug("smtpsink: connection closed", "conn", c.seq)
	})
	return err
}

// unwrapConn finds the sinkConn under a (possibly TLS) connection.
func unwrapConn(c net.Conn) *sinkConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, _ := c.(*sinkConn)
	return sc
}

// act carries out decision d at stage st on conn (the connection as the
// SMTP layer sees it: plain or TLS; sc is the sinkConn under it). It returns
// nil when the stage should proceed normally (a Reply with Code 0, after its
// Delay), the *smtp.SMTPError to answer for a Reply with a Code, or
// errDropped once the connection is closed (Disconnect, Hang, Garbage, a
// refusing banner, or the sink closing during the Delay).
func (s *Sink) act(d *decision, st Stage, conn net.Conn, sc *sinkConn) error {
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("smtpsink: fault", "conn", sc.seq, "stage", st.String(), "action", d.action.String(),
			"code", d.code, "delay", d.delay, "source", d.source)
	}
	s.count(func(st *Stats) { st.Faults++ })
	if !s.sleep(d.delay, sc) {
		_ = sc.Close()
		return errDropped
	}
	switch d.action {
	case Reply:
		if d.code == 0 {
			if d.delay > 0 {
				s.count(func(st *Stats) { st.Delays++ })
			}
			return nil
		}
		s.count(func(st *Stats) {
			if d.code/100 == 4 {
				st.TempFailures++
			} else {
				st.PermFailures++
			}
		})
		if st == StageConnect {
			// A refusing banner: write it and close.
			s.writeRaw(conn, d.replyLine(st))
			_ = sc.Close()
			return errDropped
		}
		return d.smtpError(st)
	case Disconnect:
		if d.code != 0 {
			s.writeRaw(conn, d.replyLine(st))
		}
		s.count(func(st *Stats) { st.Disconnects++ })
		_ = sc.Close()
	case Hang:
		s.count(func(st *Stats) { st.Hangs++ })
		s.hold(conn, sc)
	case Garbage:
		text := d.text
		if text == "" {
			text = GarbageText
		}
		s.count(func(st *Stats) { st.Garbage++ })
		s.writeRaw(conn, []byte(text))
		_ = sc.Close()
	}
	return errDropped
}

// sleep waits d; false if the sink or the connection closed meanwhile.
func (s *Sink) sleep(d time.Duration, sc *sinkConn) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	case <-sc.closed:
		return false
	}
}

// hold keeps conn open without answering: it swallows input until the peer
// closes, Close closes the connection, HangLimit passes or hangDiscardLimit
// bytes arrive, then closes the connection.
func (s *Sink) hold(conn net.Conn, sc *sinkConn) {
	_ = conn.SetReadDeadline(time.Now().Add(s.opts.HangLimit))
	_, _ = io.CopyN(io.Discard, conn, hangDiscardLimit)
	_ = sc.Close()
}

func (s *Sink) writeRaw(conn net.Conn, b []byte) {
	_ = conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	_, _ = conn.Write(b)
}

// tlsConfig builds the STARTTLS configuration, or nil when TLS is off. The
// StageStartTLS faults run in GetConfigForClient, chained before any the
// caller set.
func (s *Sink) tlsConfig() (*tls.Config, error) {
	var cfg *tls.Config
	switch {
	case s.opts.TLSConfig != nil:
		cfg = s.opts.TLSConfig.Clone()
	case s.opts.TLS:
		cert, pool, err := selfSignedCert(s.opts.Hostname)
		if err != nil {
			return nil, err
		}
		s.rootCAs = pool
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	default:
		return nil, nil
	}
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if err := s.startTLSFault(hello.Conn); err != nil {
			return nil, err
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return cfg, nil
}

func (s *Sink) startTLSFault(conn net.Conn) error {
	if !s.hasFaults() {
		return nil
	}
	sc := unwrapConn(conn)
	if sc == nil {
		return nil
	}
	d := s.matchFault(&Envelope{Stage: StageStartTLS, ConnSeq: sc.seq, RemoteAddr: sc.remote})
	if d == nil {
		return nil
	}
	// An error aborts the handshake; for a Reply with a Code, crypto/tls
	// sends an alert; the other actions have closed the connection.
	return s.act(d, StageStartTLS, conn, sc)
}

// smtpLogger adapts go-smtp's logger to slog at Debug level: in a fault
// sink, connection errors are expected.
type smtpLogger struct{ l *slog.Logger }

func (l smtpLogger) Printf(format string, v ...any) {
	if l.l.Enabled(context.Background(), slog.LevelDebug) {
		l.l.Debug("smtpsink: go-smtp: " + fmt.Sprintf(format, v...))
	}
}

func (l smtpLogger) Println(v ...any) {
	if l.l.Enabled(context.Background(), slog.LevelDebug) {
		l.l.Debug("smtpsink: go-smtp: " + fmt.Sprintln(v...))
	}
}
