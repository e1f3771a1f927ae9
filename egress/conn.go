package egress

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is an SMTP client connection to one mail host, ready for mail
// transactions (Send). Its methods serialize on a mutex, so Close may be
// called while a Send runs on another goroutine: it waits for the Send to
// finish (cancel the Send's context to cut it short). Info, Extension,
// Extensions, Deliveries and Exhausted never block.
type Conn struct {
	tmo            timeouts
	site           string
	ignore8bit     bool
	log            *slog.Logger
	info           ConnInfo
	ext            map[string]string
	maxDeliveries  int
	deliveries     atomic.Int64
	raw            net.Conn // the TCP connection
	mu             sync.Mutex
	nc             net.Conn // raw, or the *tls.Conn over it
	br             *bufio.Reader
	bw             *bufio.Writer
	broken, closed bool
}

// roundTrip writes one command line (without CRLF) and reads its reply.
func (c *Conn) roundTrip(cmd string, timeout time.Duration) (Response, error) {
	if err := c.writeCommands([]string{cmd}, timeout); err != nil {
		return Response{}, err
	}
	return c.readResponse(cmd, timeout)
}

// writeCommands writes command lines (without CRLF) and flushes them.
func (c *Conn) writeCommands(cmds []string, timeout time.Duration) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(min(timeout, maxWriteTimeout)))
	for _, cmd := range cmds {
		c.bw.WriteString(cmd)
		c.bw.WriteString("\r\n")
	}
	if err := c.bw.Flush(); err != nil {
		return &ioError{write: true, cmd: cmds[0], timeout: min(timeout, maxWriteTimeout), err: err}
	}
	return nil
}

// readResponse reads the reply to cmd (a command line without CRLF).
func (c *Conn) readResponse(cmd string, timeout time.Duration) (Response, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	resp, err := readReply(c.br)
	if err != nil {
		return Response{}, &ioError{cmd: cmd, timeout: timeout, err: err}
	}
	resp.Command = cmd + "\r\n"
	return resp, nil
}

// Info describes the connection. It may be called at any time.
func (c *Conn) Info() ConnInfo {
	info := c.info
	if info.Proxy != nil {
		p := *info.Proxy
		info.Proxy = &p
	}
	if info.TLS != nil {
		t := *info.TLS
		info.TLS = &t
	}
	return info
}

// Extension reports whether the peer advertised an EHLO keyword (case
// insensitive) and its parameters.
func (c *Conn) Extension(name string) (param string, ok bool) {
	param, ok = c.ext[strings.ToUpper(name)]
	return param, ok
}

// Extensions returns the EHLO keywords the peer advertised (upper case)
// with their parameters.
func (c *Conn) Extensions() map[string]string {
	out := make(map[string]string, len(c.ext))
	for k, v := range c.ext {
		out[k] = v
	}
	return out
}

// Deliveries returns the number of mail transactions started on the
// connection (each Send that issued MAIL FROM). It may be called at any
// time.
func (c *Conn) Deliveries() int { return int(c.deliveries.Load()) }

// Exhausted reports whether the connection has carried the path's
// max_deliveries_per_connection transactions (0 there means KumoMTA's
// default, 1024; a negative value means no limit), so that the caller
// should close it and open another.
func (c *Conn) Exhausted() bool {
	return c.maxDeliveries > 0 && c.Deliveries() >= c.maxDeliveries
}

// Usable reports whether the connection can carry another transaction: it
// is not closed, no earlier failure broke it, and the peer has neither
// closed it nor sent an unsolicited reply (such as a 421 on idle timeout)
// while it was idle. The last check peeks at the socket without blocking
// (on connections that expose it through syscall.Conn, as TCP connections
// do; others are assumed quiet unless their data is already buffered).
// Usable does not consider Exhausted.
func (c *Conn) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usableLocked() == nil
}

// usableLocked checks the connection before a transaction; it marks it
// broken when the peer went away.
func (c *Conn) usableLocked() error {
	if c.closed {
		return errors.New("connection closed")
	}
	if c.broken {
		return errors.New("connection broken by an earlier failure")
	}
	if err := c.checkIdle(); err != nil {
		c.broken = true
		c.log.Debug("egress: idle connection lost", "host", c.info.Host, "addr", c.info.Addr.String(), "error", err)
		return err
	}
	return nil
}

// checkIdle looks for input on an idle connection, where there should be
// none.
func (c *Conn) checkIdle() error {
	if c.br.Buffered() == 0 {
		pending, err := rawPending(c.raw)
		if err != nil {
			return err
		}
		if !pending {
			return nil
		}
	}
	// Something arrived. Over TLS it may be only a session ticket, so look
	// at the application data, briefly.
	_ = c.nc.SetReadDeadline(time.Now().Add(probeTimeout))
	_, err := c.br.Peek(1)
	_ = c.nc.SetReadDeadline(time.Time{})
	if err == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(probeTimeout))
		resp, rerr := readReply(c.br)
		if rerr == nil {
			return fmt.Errorf("peer sent an unsolicited reply: %s", resp)
		}
		return fmt.Errorf("peer sent unsolicited data: %w", rerr)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return fmt.Errorf("connection lost while idle: %w", err)
}

// Close ends the session: QUIT (waiting at most two seconds for the
// reply) unless the connection is broken, then closes the connection. It
// is safe to call more than once.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if !c.broken {
		if err := c.writeCommands([]string{"QUIT"}, quitTimeout); err == nil {
			_, _ = c.readResponse("QUIT", quitTimeout)
		}
	}
	// Close the TCP connection directly: a TLS close_notify could block on
	// a peer that stopped reading, and the session is over either way.
	if err := c.raw.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("egress: closing connection to %s: %w", c.info.Addr, err)
	}
	return nil
}

// peerLabel names the peer in failure texts.
func (c *Conn) peerLabel() string {
	label := c.info.Host + "/" + c.info.Addr.String()
	if c.site != "" {
		return c.site + " " + label
	}
	return label
}
