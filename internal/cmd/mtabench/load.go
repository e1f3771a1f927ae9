package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

const (
	benchFrom   = "bench@example.com"
	benchDomain = "example.net"
	maxErrors   = 10 // distinct error texts kept per run
	maxAttempts = 3  // per message, after 4xx replies or connection errors
)

// bodyPool is 1 MiB of base64 text from a fixed-seed PRNG. Message bodies
// are cut from it: like an attachment they do not compress, so a spool
// that compresses (badger's blocks) gets no unfair advantage over one that
// does not (Postfix's queue files).
var bodyPool = func() []byte {
	raw := make([]byte, 3<<18)
	rand.NewChaCha8([32]byte{'m', 't', 'a', 'b', 'e', 'n', 'c', 'h'}).Read(raw)
	return []byte(base64.StdEncoding.EncodeToString(raw))
}()

const lineLen = 76

// makeMessage returns message seq of run runID: RFC 5322 headers with a
// unique Message-ID (the sink's duplicate key) and a body of base64-like
// lines of 76 characters (the last may be shorter, or 77), so that the
// whole message, CRLFs included, is exactly size bytes, unless size is
// smaller than the headers plus 2 (then the headers and what fits).
func makeMessage(runID string, seq, size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 80)
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: mtabench %s %d\r\n"+
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <%d.%s@mtabench.example>\r\n"+
		"X-Mtabench-Seq: %d\r\n\r\n",
		benchFrom, rcptFor(seq), runID, seq, seq, runID, seq)
	lines := len(bodyPool)/lineLen - 1 // a line may take one extra character
	i := seq * 7919
	for rest := size - b.Len(); rest >= 2; i++ {
		n := min(lineLen, rest-2)
		if rest-n-2 == 1 {
			n++ // no room for a line of 1 byte: lengthen this one
		}
		off := (i % lines) * lineLen
		b.Write(bodyPool[off : off+n])
		b.WriteString("\r\n")
		rest -= n + 2
	}
	return b.Bytes()
}

func rcptFor(seq int) string { return "rcpt" + strconv.Itoa(seq) + "@" + benchDomain }

// rcptsFor returns the n recipients of message seq: rcptFor(seq) first,
// then rcpt<seq>-<i>@ the same domain, all distinct across the run.
func rcptsFor(seq, n int) []string {
	out := make([]string, max(n, 1))
	out[0] = rcptFor(seq)
	for i := 1; i < n; i++ {
		out[i] = "rcpt" + strconv.Itoa(seq) + "-" + strconv.Itoa(i) + "@" + benchDomain
	}
	return out
}

// loadSpec is one load run: N messages of Size bytes, each to Rcpts
// recipients, over Conns connections to Addr.
type loadSpec struct {
	Addr  string
	N     int
	Size  int
	Conns int
	Rcpts int // recipients per message; 0 means 1
	// Reconnect opens a new connection for every message (EHLO, one
	// transaction, QUIT), as smtp-source does without -d.
	Reconnect bool
	// Rate, if positive, paces the run: message i is not started before
	// Start + i/Rate, over all connections together (an open-loop
	// schedule, so a slow reply does not lower the offered load).
	Rate     float64
	RunID    string
	Deadline time.Time // stop sending (and abort open transactions) then
}

// loadResult is what the client saw. Latencies are of accepted messages,
// from MAIL FROM to the 250 after the final dot, sorted.
type loadResult struct {
	Accepted  int
	Failed    int
	Unsent    int // not attempted before the deadline
	Retries   int // attempts repeated after a 4xx reply or a connection error
	Latencies []time.Duration
	Start     time.Time // before the first dial
	LastAck   time.Time // the last 250 after DATA
	Errors    []string
	TimedOut  bool
}

// drive sends spec.N unique messages over spec.Conns connections with
// go-smtp's client: EHLO once per connection (or per message with
// spec.Reconnect), then MAIL, RCPT per recipient, DATA per message,
// without pipelining. A message refused with a 5xx reply is
// counted as failed and the connection is RSET; after a 4xx reply or an
// I/O error the connection is replaced and the message sent again, up to
// maxAttempts times. At spec.Deadline every connection is closed, so drive
// returns by then.
func drive(spec loadSpec) loadResult {
	var (
		next   atomic.Int64
		mu     sync.Mutex
		res    loadResult
		conns  = map[net.Conn]bool{}
		closed bool
	)
	errSeen := map[string]bool{}
	addErr := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		s := err.Error()
		if !errSeen[s] && len(res.Errors) < maxErrors {
			errSeen[s] = true
			res.Errors = append(res.Errors, s)
		}
	}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if add {
			if closed {
				return false
			}
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	watchdog := time.AfterFunc(time.Until(spec.Deadline), func() {
		mu.Lock()
		defer mu.Unlock()
		closed = true
		res.TimedOut = true
		for c := range conns {
			c.Close()
		}
	})
	defer watchdog.Stop()

	res.Start = time.Now()
	var wg sync.WaitGroup
	for range spec.Conns {
		wg.Go(func() {
			var (
				cl       *smtp.Client
				raw      net.Conn
				lat      []time.Duration
				ok, fail int
				retries  int
				lastAck  time.Time
			)
			drop := func() {
				if cl != nil {
					cl.Close()
					track(raw, false)
					cl, raw = nil, nil
				}
			}
			defer func() {
				if cl != nil {
					cl.Quit()
				}
				drop()
				mu.Lock()
				res.Accepted += ok
				res.Failed += fail
				res.Retries += retries
				res.Latencies = append(res.Latencies, lat...)
				if lastAck.After(res.LastAck) {
					res.LastAck = lastAck
				}
				mu.Unlock()
			}()
			seq, attempt := -1, 0
			for {
				if seq < 0 {
					seq, attempt = int(next.Add(1)-1), 0
					if seq >= spec.N {
						return
					}
				}
				if spec.Rate > 0 && attempt == 0 {
					due := res.Start.Add(time.Duration(float64(seq) / spec.Rate * float64(time.Second)))
					if wait := time.Until(due); wait > 0 {
						if due.After(spec.Deadline) {
							return
						}
						time.Sleep(wait)
					}
				}
				if time.Now().After(spec.Deadline) {
					return // seq and the rest are counted as unsent
				}
				attempt++
				if cl == nil {
					c, err := dialSMTP(spec.Addr, spec.Deadline)
					if err != nil {
						addErr(err)
						if attempt >= maxAttempts {
							fail++
							seq = -1
						}
						time.Sleep(50 * time.Millisecond)
						continue
					}
					if !track(c.raw, true) { // past the deadline
						c.cl.Close()
						return
					}
					cl, raw = c.cl, c.raw
				}
				msg := makeMessage(spec.RunID, seq, spec.Size)
				t0 := time.Now()
				err := sendOne(cl, rcptsFor(seq, spec.Rcpts), msg)
				if err == nil {
					lastAck = time.Now()
					lat = append(lat, lastAck.Sub(t0))
					ok++
					seq = -1
					if spec.Reconnect {
						cl.Quit()
						drop()
					}
					continue
				}
				addErr(err)
				// A 4xx reply (such as mtakit's 451 "too many messages on
				// this connection; reconnect") or a broken connection: retry
				// the message on a new connection. A 5xx fails it.
				se, isReply := errors.AsType[*smtp.SMTPError](err)
				if isReply && se.Code >= 500 {
					fail++
					seq = -1
					if cl.Reset() != nil {
						drop()
					}
					continue
				}
				drop()
				if attempt >= maxAttempts {
					fail++
					seq = -1
				} else {
					retries++
				}
			}
		})
	}
	wg.Wait()
	res.Unsent = spec.N - res.Accepted - res.Failed
	slices.Sort(res.Latencies)
	return res
}

type smtpConn struct {
	cl  *smtp.Client
	raw net.Conn
}

func dialSMTP(addr string, deadline time.Time) (smtpConn, error) {
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return smtpConn{}, err
	}
	cl := smtp.NewClient(raw)
	// Generous per-command bounds; the run's deadline closes the
	// connection anyway.
	cl.CommandTimeout = time.Until(deadline) + time.Second
	cl.SubmissionTimeout = cl.CommandTimeout
	if err := cl.Hello("mtabench.localhost"); err != nil {
		cl.Close()
		return smtpConn{}, fmt.Errorf("EHLO: %w", err)
	}
	return smtpConn{cl: cl, raw: raw}, nil
}

// sendOne runs one transaction on an open connection.
func sendOne(cl *smtp.Client, rcpts []string, msg []byte) error {
	if err := cl.Mail(benchFrom, nil); err != nil {
		return err
	}
	for _, rcpt := range rcpts {
		if err := cl.Rcpt(rcpt, nil); err != nil {
			return err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
