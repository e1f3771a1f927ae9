package smtpsink

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"time"
)

// Stats are the sink's counters since Start or the last Reset.
type Stats struct {
	Connections int64 // connections accepted
	ActiveConns int   // connections open now
	PeakConns   int   // most connections open at once
	MaxPerConn  int   // most messages accepted on one connection

	Messages    int64 // messages accepted (250 after DATA); Count()
	Recipients  int64 // recipient deliveries in accepted messages
	Bytes       int64 // bytes of accepted messages
	TLSMessages int64 // accepted messages that came over STARTTLS
	Unkeyed     int64 // accepted messages without the KeyHeader
	Duplicates  int64 // deliveries of a (key, recipient) already delivered

	Faults       int64 // fault rules applied (counted when the action starts)
	TempFailures int64 // injected 4xx replies
	PermFailures int64 // injected 5xx replies
	Disconnects  int64 // injected disconnects
	Hangs        int64 // injected hangs
	Garbage      int64 // injected garbage replies
	Delays       int64 // injected delays before a normal reply
}

// Message is an accepted message, kept when Options.Store is set.
type Message struct {
	Seq        int64 // the n of "queued as S<n>"
	From       string
	To         []string
	Data       []byte // as received, CRLF line ends, dot-unstuffed
	Key        string // value of Options.KeyHeader, "" if absent
	TLS        bool
	AuthUser   string // the user name of SMTP AUTH; "" without
	EHLO       string
	RemoteAddr string
	ReceivedAt time.Time
}

// Duplicate is a (key, recipient) pair accepted more than once.
type Duplicate struct {
	Key   string
	Rcpt  string
	Count int
}

func (s *Sink) record(ss *session, from string, to []string, data []byte) int64 {
	key := headerValue(data, s.opts.KeyHeader)
	var hashes []uint64
	if key != "" {
		hashes = make([]uint64, len(to))
		for i, rcpt := range to {
			hashes[i] = s.pairHash(key, rcpt)
		}
	}
	var msg Message
	if s.opts.Store {
		msg = Message{
			From: from, To: to, Data: bytes.Clone(data), Key: key, TLS: ss.tls, AuthUser: ss.authUser(),
			EHLO: ss.ehlo, RemoteAddr: ss.sc.remote, ReceivedAt: time.Now(),
		}
	}
	seq := s.queueSeq.Add(1)

	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	st.Messages++
	st.Recipients += int64(len(to))
	st.Bytes += int64(len(data))
	if ss.tls {
		st.TLSMessages++
	}
	ss.sc.txns++
	st.MaxPerConn = max(st.MaxPerConn, ss.sc.txns)
	if key == "" {
		st.Unkeyed++
	}
	for i, h := range hashes {
		n := s.deliveries[h] + 1
		s.deliveries[h] = n
		if n > 1 {
			st.Duplicates++
			if dup := s.dups[h]; dup != nil {
				dup.Count = int(n)
			} else {
				s.dups[h] = &Duplicate{Key: key, Rcpt: to[i], Count: int(n)}
			}
		}
	}
	if s.opts.Store {
		msg.Seq = seq
		s.msgs = append(s.msgs, msg)
	}
	s.changedLocked()
	return seq
}

func (s *Sink) pairHash(key, rcpt string) uint64 {
	var h maphash.Hash
	h.SetSeed(s.hashSeed)
	h.WriteString(key)
	h.WriteByte(0)
	h.WriteString(rcpt)
	return h.Sum64()
}

// count applies f to the stats under the lock and wakes waiters.
func (s *Sink) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.changedLocked()
	s.mu.Unlock()
}

// changedLocked wakes every Wait. s.mu must be held.
func (s *Sink) changedLocked() {
	if s.notify != nil {
		close(s.notify)
		s.notify = nil
	}
}

func (s *Sink) statsLocked() Stats {
	st := s.stats
	st.ActiveConns = len(s.conns)
	return st
}

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

// Count returns the number of accepted messages (transactions).
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.stats.Messages)
}

// Recipients returns the number of recipient deliveries in accepted
// messages.
func (s *Sink) Recipients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.stats.Recipients)
}

// Messages returns the accepted messages in order of acceptance (nil
// without Options.Store). The slice is a copy; Data and To are shared and
// must not be modified.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// DeliveryCount returns how many accepted messages with key (the
// KeyHeader value, exactly as in the message) were delivered to rcpt
// (exactly as in RCPT TO).
func (s *Sink) DeliveryCount(key, rcpt string) int {
	h := s.pairHash(key, rcpt)
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.deliveries[h])
}

// UniqueDeliveries returns the number of distinct (key, recipient) pairs
// delivered.
func (s *Sink) UniqueDeliveries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.deliveries)
}

// Duplicates returns every (key, recipient) pair delivered more than once,
// sorted by key then recipient.
func (s *Sink) Duplicates() []Duplicate {
	s.mu.Lock()
	out := make([]Duplicate, 0, len(s.dups))
	for _, d := range s.dups {
		out = append(out, *d)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Duplicate) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Rcpt, b.Rcpt))
	})
	return out
}

// Reset forgets accepted messages, delivery keys and counters (faults and
// the Mix stay; ActiveConns and PeakConns restart from the open connections).
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{PeakConns: len(s.conns)}
	for c := range s.conns {
		c.txns = 0
	}
	s.msgs = nil
	s.deliveries = make(map[uint64]uint32)
	s.dups = make(map[uint64]*Duplicate)
	s.changedLocked()
}

// WaitCount blocks until at least n messages have been accepted.
func (s *Sink) WaitCount(ctx context.Context, n int) error {
	return s.Wait(ctx, func(st Stats) bool { return st.Messages >= int64(n) })
}

// WaitRecipients blocks until at least n recipient deliveries have been
// accepted.
func (s *Sink) WaitRecipients(ctx context.Context, n int) error {
	return s.Wait(ctx, func(st Stats) bool { return st.Recipients >= int64(n) })
}

// Wait blocks until cond holds for the stats, ctx ends (a ctx without a
// deadline is bounded by DefaultWaitTimeout) or the sink closes (ErrClosed).
// cond is called without locks held, once per change of the stats.
func (s *Sink) Wait(ctx context.Context, cond func(Stats) bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultWaitTimeout)
		defer cancel()
	}
	for {
		s.mu.Lock()
		st := s.statsLocked()
		closed := s.closed
		if s.notify == nil {
			s.notify = make(chan struct{})
		}
		ch := s.notify
		s.mu.Unlock()
		if cond(st) {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("smtpsink: wait: %w (messages=%d recipients=%d)", ctx.Err(), st.Messages, st.Recipients)
		}
	}
}

// headerValue returns the first value of header field name in the header
// section of msg, unfolded and trimmed.
func headerValue(msg []byte, name string) string {
	var val []byte
	found := false
	for len(msg) > 0 {
		var line []byte
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			line, msg = msg, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break // end of header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			if found {
				val = append(val, ' ')
				val = append(val, bytes.TrimSpace(line)...)
			}
			continue
		}
		if found {
			break
		}
		if len(line) > len(name) && line[len(name)] == ':' && equalFoldASCII(line[:len(name)], name) {
			found = true
			val = append(val, bytes.TrimSpace(line[len(name)+1:])...)
		}
	}
	return string(val)
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lowerASCII(b[i]) != lowerASCII(s[i]) {
			return false
		}
	}
	return true
}
