package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

const (
	// pipelineWindow bounds the commands written before their replies are
	// read, so that neither side can fill its socket buffers and stall.
	pipelineWindow = 100
	// dataChunk is the slice of message data written under one write
	// deadline.
	dataChunk = 64 << 10
)

// Envelope is one message to send.
type Envelope struct {
	// Sender is the reverse path without angle brackets; "" is the null
	// reverse path (bounces).
	Sender string
	// Recipients are the forward paths without angle brackets. The caller
	// splits larger lists into batches of max_recipients_per_batch and
	// retries recipients refused with 452 (too many recipients) in the next
	// batch, as KumoMTA does.
	Recipients []string
	// Data is the message, headers and body, with CRLF line ends and not
	// dot-stuffed. It is sent byte for byte: a '.' is doubled after every
	// LF and at the start (transparency, RFC 5321 section 4.5.2), and CRLF
	// is added before the final "." when Data does not end with LF.
	// Nothing else is changed; bare LF and bare CR are not repaired.
	Data []byte
}

// SendResult is the outcome of one transaction.
type SendResult struct {
	// Recipients holds the outcome for each Envelope.Recipients entry, in
	// the same order: the reply to the end of the data for a recipient
	// accepted at RCPT TO; otherwise the reply that refused it (to RCPT
	// TO, to MAIL FROM, or to DATA); or a synthesized response (Text
	// starting with InternalPrefix) for an address that could not be sent,
	// an 8-bit message the host cannot take, or a connection failure.
	Recipients []Response
	// Mail is the reply to MAIL FROM; zero Code when it was not sent or
	// not answered.
	Mail Response
	// Rcpt holds the reply to each RCPT TO, in Envelope.Recipients order;
	// zero Code where none was sent or answered.
	Rcpt []Response
	// Data is the reply that ended the data phase: to the final "." after
	// the message was sent, or to DATA when the host refused it. Zero
	// Code when no recipient was accepted or the connection failed first.
	Data Response
}

// Send runs one mail transaction: MAIL FROM, one RCPT TO per recipient,
// DATA and the message, and returns the outcome per recipient.
//
// MAIL FROM carries BODY=8BITMIME when the data has 8-bit bytes, SMTPUTF8
// when an address is not ASCII, and SIZE when the host advertises SIZE.
// Without the extension that 8-bit content or addresses need, the
// recipients fail with KumoMTA's "554 5.6.3" / "554 5.6.7" internal
// responses and nothing is sent (unless DialOptions.Ignore8BitChecks).
//
// When the host advertises PIPELINING, MAIL FROM, the RCPT TOs and DATA are
// written together (as KumoMTA does) and the replies read afterwards; if
// no recipient was accepted but DATA was answered 354 anyway, a lone "."
// ends it (RFC 2920 section 3.1). Without PIPELINING each command waits
// for its reply and DATA is sent only when a recipient was accepted. The
// replies are awaited for at most the path's mail_from_timeout,
// rcpt_to_timeout, data_timeout (DATA, and each 64 KiB of data written)
// and data_dot_timeout (the final "." reply).
//
// After a failed transaction the connection is reset with RSET so that it
// can carry the next one; a failed RSET, a 421 reply, a timeout or any
// network error leaves it not Usable.
//
// Send returns a non-nil error in three cases. ErrConnUnusable (wrapped):
// the connection was already unusable and nothing was sent. A
// *ResponseError: the connection failed before every recipient had a reply
// from the host; those recipients carry the error's Response (421 4.4.2 for
// a timeout, 400 otherwise, both transient and starting with
// InternalPrefix), and the error wraps the cause (the context's error when
// ctx ended, which closes the connection). Any other error: the envelope
// has no recipients. Refusals by the host are not errors: they are in the
// result.
func (c *Conn) Send(ctx context.Context, env Envelope) (SendResult, error) {
	if len(env.Recipients) == 0 {
		return SendResult{}, errors.New("egress: envelope has no recipients")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return SendResult{}, fmt.Errorf("%w: %v", ErrConnUnusable, err)
	}

	n := len(env.Recipients)
	res := SendResult{Recipients: make([]Response, n), Rcpt: make([]Response, n)}
	if err := checkAddress(env.Sender, true); err != nil {
		r := internal(501, "5.1.7", "invalid sender address %q: %v", env.Sender, err)
		for i := range res.Recipients {
			res.Recipients[i] = r
		}
		return res, nil
	}
	valid := make([]int, 0, n)
	for i, rcpt := range env.Recipients {
		if err := checkAddress(rcpt, false); err != nil {
			res.Recipients[i] = internal(501, "5.1.3", "invalid recipient address %q: %v", rcpt, err)
			continue
		}
		valid = append(valid, i)
	}
	if len(valid) == 0 {
		return res, nil
	}
	setAll := func(idx []int, r Response) {
		for _, i := range idx {
			res.Recipients[i] = r
		}
	}

	mail := "MAIL FROM:<" + smtpPath(env.Sender) + ">"
	if has8bit(env.Data) {
		if _, ok := c.ext["8BITMIME"]; ok {
			mail += " BODY=8BITMIME"
		} else if !c.ignore8bit {
			setAll(valid, internal(554, "5.6.3", "DATA is 8bit, destination does not support 8BITMIME. "+
				"Conversion via msg:check_fix_conformance during reception is required"))
			return res, nil
		}
	}
	if !envelopeASCII(env, valid) {
		if _, ok := c.ext["SMTPUTF8"]; ok {
			mail += " SMTPUTF8"
		} else if !c.ignore8bit {
			setAll(valid, internal(554, "5.6.7", "envelope is 8bit, destination does not support SMTPUTF8."))
			return res, nil
		}
	}
	if _, ok := c.ext["SIZE"]; ok {
		mail += " SIZE=" + strconv.Itoa(len(env.Data))
	}

	stop := context.AfterFunc(ctx, func() { _ = c.raw.Close() })
	defer func() {
		if !stop() {
			c.broken = true // ctx ended: the AfterFunc closed the connection
		}
	}()
	c.deliveries.Add(1)

	cmds := make([]string, 0, len(valid)+2)
	tmos := make([]time.Duration, 0, len(valid)+2)
	cmds, tmos = append(cmds, mail), append(tmos, c.tmo.mailFrom)
	for _, i := range valid {
		cmds, tmos = append(cmds, "RCPT TO:<"+smtpPath(env.Recipients[i])+">"), append(tmos, c.tmo.rcptTo)
	}
	_, pipelining := c.ext["PIPELINING"]
	if pipelining {
		cmds, tmos = append(cmds, "DATA"), append(tmos, c.tmo.data)
	}
	resps, err := c.exchange(cmds, tmos, pipelining)

	var accepted []int
	if len(resps) > 0 {
		res.Mail = resps[0]
	}
	mailFailed := len(resps) > 0 && !res.Mail.Success()
	for j, i := range valid {
		if 1+j < len(resps) {
			res.Rcpt[i] = resps[1+j]
		}
		switch {
		case mailFailed:
			res.Recipients[i] = res.Mail
		case res.Rcpt[i].Code == 0:
		case res.Rcpt[i].Success():
			accepted = append(accepted, i)
		default:
			res.Recipients[i] = res.Rcpt[i]
		}
	}
	c.noteReplies(resps[:min(len(resps), 1+len(valid))]...)
	if err != nil {
		return c.connFailure(ctx, &res, valid, err)
	}

	var (
		dataResp Response
		haveData bool
	)
	if pipelining {
		dataResp, haveData = resps[len(resps)-1], true
	} else if len(accepted) > 0 {
		dataResp, err = c.roundTrip("DATA", c.tmo.data)
		if err != nil {
			return c.connFailure(ctx, &res, valid, err)
		}
		haveData = true
	}
	failed := len(accepted) == 0
	switch {
	case !haveData:
	case len(accepted) == 0:
		if dataResp.Code == 354 {
			// RFC 2920 section 3.1: DATA was accepted although no
			// recipient was; end it with an empty message.
			if _, err := c.roundTrip(".", c.tmo.dataDot); err != nil {
				return c.connFailure(ctx, &res, valid, err)
			}
		} else {
			c.noteReplies(dataResp)
		}
	case dataResp.Code != 354:
		c.noteReplies(dataResp)
		res.Data = dataResp
		setAll(accepted, dataResp)
		failed = true
	default:
		final, err := c.endData(env.Data)
		if err != nil {
			return c.connFailure(ctx, &res, valid, err)
		}
		c.noteReplies(final)
		res.Data = final
		setAll(accepted, final)
		failed = !final.Success()
	}
	if failed && !c.broken {
		c.reset()
	}
	return res, nil
}

// exchange writes cmds and reads their replies: all at once, in windows of
// pipelineWindow, when pipelining, else one by one, stopping when the
// first command (MAIL FROM) is refused. It returns the replies read before
// any failure.
func (c *Conn) exchange(cmds []string, tmos []time.Duration, pipelining bool) ([]Response, error) {
	window := 1
	if pipelining {
		window = pipelineWindow
	}
	out := make([]Response, 0, len(cmds))
	for start := 0; start < len(cmds); start += window {
		end := min(start+window, len(cmds))
		if err := c.writeCommands(cmds[start:end], maxDuration(tmos[start:end])); err != nil {
			return out, err
		}
		for i := start; i < end; i++ {
			r, err := c.readResponse(cmds[i], tmos[i])
			if err != nil {
				return out, err
			}
			out = append(out, r)
			if !pipelining && i == 0 && !r.Success() {
				return out, nil
			}
		}
	}
	return out, nil
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// endData writes data dot-stuffed, then the final ".", and reads the
// reply.
func (c *Conn) endData(data []byte) (Response, error) {
	wt := min(c.tmo.data, maxWriteTimeout)
	werr := func(err error) error { return &ioError{write: true, data: true, timeout: wt, err: err} }
	atLineStart := true
	for off := 0; off < len(data); off += dataChunk {
		piece := data[off:min(off+dataChunk, len(data))]
		_ = c.nc.SetWriteDeadline(time.Now().Add(wt))
		for len(piece) > 0 {
			if atLineStart && piece[0] == '.' {
				if err := c.bw.WriteByte('.'); err != nil {
					return Response{}, werr(err)
				}
			}
			i := bytes.IndexByte(piece, '\n')
			if i < 0 {
				if _, err := c.bw.Write(piece); err != nil {
					return Response{}, werr(err)
				}
				atLineStart = false
				break
			}
			if _, err := c.bw.Write(piece[:i+1]); err != nil {
				return Response{}, werr(err)
			}
			piece, atLineStart = piece[i+1:], true
		}
	}
	term := ".\r\n"
	if !atLineStart || len(data) == 0 {
		term = "\r\n.\r\n"
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(wt))
	c.bw.WriteString(term)
	if err := c.bw.Flush(); err != nil {
		return Response{}, werr(err)
	}
	return c.readResponse(".", c.tmo.dataDot)
}

// noteReplies marks the connection broken after replies that end the
// session or show that the dialogue is out of step: 421 (the host is
// closing the connection), and 3xx anywhere but DATA.
func (c *Conn) noteReplies(rs ...Response) {
	for _, r := range rs {
		if r.Code == 421 || (r.Code/100 == 3 && r.Command != "DATA\r\n") {
			c.broken = true
		}
	}
}

// reset sends RSET after a failed transaction; the connection is broken if
// that fails.
func (c *Conn) reset() {
	resp, err := c.roundTrip("RSET", c.tmo.rset)
	switch {
	case err != nil:
		c.broken = true
		c.log.Debug("egress: RSET failed", "host", c.info.Host, "addr", c.info.Addr.String(), "error", err)
	case !resp.Success():
		c.broken = true
		c.log.Debug("egress: RSET refused", "host", c.info.Host, "addr", c.info.Addr.String(), "response", resp.String())
	}
}

// connFailure ends a transaction that the connection failed: the
// connection is broken, and every recipient without a reply gets the
// synthesized failure response.
func (c *Conn) connFailure(ctx context.Context, res *SendResult, valid []int, err error) (SendResult, error) {
	c.broken = true
	r := c.failureResponse(ctx, err)
	pending := false
	for _, i := range valid {
		if res.Recipients[i].Code == 0 {
			res.Recipients[i] = r
			pending = true
		}
	}
	c.log.Debug("egress: transaction failed", "host", c.info.Host, "addr", c.info.Addr.String(), "error", err)
	if !pending {
		return *res, nil
	}
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return *res, &ResponseError{Response: r, Err: err}
}

// failureResponse is the response KumoMTA records when a send fails below
// the SMTP level.
func (c *Conn) failureResponse(ctx context.Context, err error) Response {
	var ioe *ioError
	errors.As(err, &ioe)
	var r Response
	switch {
	case ctx.Err() != nil:
		r = internal(400, "", "failed to send message to %s: %v", c.peerLabel(), context.Cause(ctx))
	case ioe != nil && ioe.Timeout() && ioe.data:
		r = internal(421, "4.4.2", "failed to send message to %s: Timed Out after %v sending message payload data",
			c.peerLabel(), ioe.timeout)
	case ioe != nil && ioe.Timeout() && ioe.write:
		r = internal(421, "4.4.2", "failed to send message to %s: Timed Out waiting %v to write %q",
			c.peerLabel(), ioe.timeout, ioe.cmd)
	case ioe != nil && ioe.Timeout():
		r = internal(421, "4.4.2", "failed to send message to %s: Timed Out waiting %v for response to %q",
			c.peerLabel(), ioe.timeout, ioe.cmd)
	default:
		r = internal(400, "", "failed to send message to %s: %v", c.peerLabel(), err)
	}
	if ioe != nil && ioe.cmd != "" {
		r.Command = ioe.cmd + "\r\n"
	}
	return r
}

// checkAddress rejects what cannot be sent inside MAIL FROM:<...> or
// RCPT TO:<...> without changing the command: control characters (CR and
// LF above all) and angle brackets. The reverse path may be empty.
func checkAddress(addr string, reverse bool) error {
	if addr == "" && !reverse {
		return errors.New("empty address")
	}
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c < ' ' || c == 0x7f:
			return errors.New("control character in address")
		case c == '<' || c == '>':
			return errors.New("angle bracket in address")
		}
	}
	return nil
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func envelopeASCII(env Envelope, valid []int) bool {
	if !isASCII(env.Sender) {
		return false
	}
	for _, i := range valid {
		if !isASCII(env.Recipients[i]) {
			return false
		}
	}
	return true
}
