package mta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// attemptOutcome carries what the log records of one attempt need to know
// about where it went.
type attemptOutcome struct {
	rq     *readyQueue // nil when the attempt never reached a ready queue
	proto  string
	peer   *logs.PeerAddress
	source *logs.SourceAddress
	tls    tlsInfo
}

// sendResult is what became of one message handed to a session.
type sendResult int

const (
	attempted sendResult = iota // sent (or failed in a way that counts as an attempt) and settled
	unusable                    // the session could not send at all; m untouched
	aborted                     // the server is stopping; m untouched and not attempted
)

// deliverOne sends m on sess and settles the outcome. A message that was
// not tried (session unusable, server stopping before the send began)
// keeps its state and gets no record.
func (s *Server) deliverOne(ctx context.Context, rq *readyQueue, sess deliverySession, m *queuedMessage, proto string) sendResult {
	if s.runCtx.Err() != nil {
		return aborted
	}
	data, err := s.loadData(ctx, m.id, m.bodyID())
	if err != nil {
		switch {
		case s.runCtx.Err() != nil:
			return aborted
		case errors.Is(err, spool.ErrNotFound):
			// Meta without data: a store cut short by a crash before the
			// message was acknowledged (data and meta are written in
			// parallel), or data removed by hand. Nothing can be sent.
			s.log.Warn("message data missing from spool (store interrupted before acknowledgement?); dropping", "id", m.id, "queue", m.queue)
			s.retire(m)
		default:
			s.failAll(m, &attemptOutcome{rq: rq, proto: proto}, internalReply(451, "4.3.0", "spool load failed: "+err.Error()))
		}
		return attempted
	}
	env := &envelope{
		id:         m.id.String(),
		sender:     m.sender(),
		recipients: m.recipients(),
		data:       data,
		queue:      m.queue,
		attempt:    m.numAttempts() + 1,
	}
	replies := sess.Send(ctx, env)
	if replies == nil {
		return unusable
	}
	peer, src, ti := sess.Peer()
	s.settle(m, &attemptOutcome{rq: rq, proto: proto, peer: peer, source: src, tls: ti}, replies)
	s.observe(ctx, rq, m, replies)
	return attempted
}

// settle applies the per-recipient replies of one attempt: delivered and
// bounced recipients are logged and dropped, transient ones are retried
// later (or expire). The spool is updated before the in-memory state, so a
// crash never loses a recipient that still needs delivery.
func (s *Server) settle(m *queuedMessage, o *attemptOutcome, replies []reply) {
	now := time.Now()
	attempts := m.numAttempts() + 1
	var retry []string
	var retryReply reply
	for i, rcpt := range m.recipients() {
		r := replies[i]
		switch {
		case r.success():
			s.logOutcome(logs.Delivery, m, rcpt, r, o, attempts, now)
		case r.transient():
			retry = append(retry, rcpt)
			retryReply = r
			s.logOutcome(logs.TransientFailure, m, rcpt, r, o, attempts, now)
		default:
			s.logOutcome(logs.Bounce, m, rcpt, r, o, attempts, now)
			s.maybeDSN(m, rcpt, r, "failed")
		}
	}
	if len(retry) == 0 {
		s.retire(m)
		return
	}
	cfg := s.queueConfig(m.queue)
	due, expired := cfg.nextAttempt(now, m.id.Time(), m.numAttempts())
	if expired != nil {
		r := reply{Code: expired.Code, Enhanced: expired.EnhancedCode, Text: expired.Message}
		for _, rcpt := range retry {
			s.logOutcome(logs.Expiration, m, rcpt, r, &attemptOutcome{}, attempts, now)
			s.maybeDSN(m, rcpt, retryReply, "failed")
		}
		s.retire(m)
		return
	}
	m.setRecipients(retry)
	m.attempts = clampAttempts(attempts)
	m.setDue(due)
	if err := s.storeMeta(m); err != nil {
		// The old meta is still in the spool: the message is retried from
		// there after a restart, never lost. Keep it scheduled here too.
		s.log.Error("update meta after transient failure", "id", m.id, "err", err)
	}
	s.sched.reschedule(m)
}

// failAll settles an attempt (or a routing failure) that got one reply for
// every recipient of m.
func (s *Server) failAll(m *queuedMessage, o *attemptOutcome, r reply) {
	s.settle(m, o, uniform(r, len(m.recipients())))
}

// expireIfTooOld retires m with an Expiration record when it is already
// past max_age (for example after a long downtime).
func (s *Server) expireIfTooOld(m *queuedMessage, cfg QueueConfig, now time.Time) bool {
	age := now.Sub(m.id.Time())
	if age <= cfg.MaxAge {
		return false
	}
	r := reply{Code: 551, Enhanced: [3]int{5, 4, 7}, Text: fmt.Sprintf("Message age %s exceeds max_age=%s", age.Round(time.Second), cfg.MaxAge)}
	for _, rcpt := range m.recipients() {
		s.logOutcome(logs.Expiration, m, rcpt, r, &attemptOutcome{}, m.numAttempts(), now)
		s.maybeDSN(m, rcpt, r, "failed")
	}
	s.retire(m)
	return true
}

// requeueUnattempted returns a message that was taken but not tried
// (shutdown) to the scheduler unchanged.
func (s *Server) requeueUnattempted(m *queuedMessage) { s.sched.reschedule(m) }

// retire removes a finished message from the spool and the scheduler.
func (s *Server) retire(m *queuedMessage) {
	ctx := context.Background()
	// Meta first: without meta a message is not recovered, so a crash
	// between the two leaves only unreferenced data, never a resend.
	if err := s.opts.MetaSpool.Remove(ctx, m.id); err != nil {
		s.log.Error("remove meta of finished message", "id", m.id, "err", err)
	}
	if err := s.opts.DataSpool.Remove(ctx, m.id); err != nil {
		s.log.Error("remove data of finished message", "id", m.id, "err", err)
	}
	if !s.sched.finish(m) {
		return // retired before
	}
	if body := m.bodyID(); !body.IsZero() && s.bodies.release(body) {
		if err := s.opts.DataSpool.Remove(ctx, body); err != nil {
			s.log.Error("remove shared body of finished messages", "body", body, "err", err)
		}
	}
}

func (s *Server) storeMeta(m *queuedMessage) error {
	return s.opts.MetaSpool.Store(context.Background(), m.id, m.encode())
}

func (s *Server) logOutcome(t logs.RecordType, m *queuedMessage, rcpt string, r reply, o *attemptOutcome, attempts int, now time.Time) {
	rec := &logs.Record{
		Type:                 t,
		ID:                   m.id.String(),
		Sender:               m.sender(),
		Recipient:            logs.Recipients{rcpt},
		Queue:                m.queue,
		Response:             logResponse(r.Code, smtp.EnhancedCode(r.Enhanced), r.Text),
		PeerAddress:          o.peer,
		SourceAddress:        o.source,
		NumAttempts:          attempts,
		BounceClassification: "Uncategorized",
		NodeID:               s.nodeID,
		Meta:                 m.pickMeta(s.opts.LogMeta),
		Headers:              m.headers(),
		TLSCipher:            o.tls.cipher,
		TLSProtocolVersion:   o.tls.version,
		TLSPeerSubjectName:   o.tls.peerSubject,
	}
	if r.Command != "" {
		rec.Response.Command = ptr(r.Command)
	}
	if o.rq != nil {
		rec.Site = o.rq.name
		rec.EgressSource = ptr(o.rq.source.Name())
		rec.EgressPool = ptr(o.rq.pool)
	}
	if o.proto != "" {
		rec.DeliveryProtocol = ptr(o.proto)
	}
	if proto := m.metaString(MetaReceptionProtocol); proto != "" {
		rec.ReceptionProtocol = ptr(proto)
	}
	if t != logs.Delivery {
		rec.BounceClassification = s.classify(r)
	}
	rec.SetTimes(now, m.id.Time())
	if err := s.sink.Log(rec); err != nil {
		s.log.Error("log outcome", "type", t, "id", m.id, "err", err)
	}
}

func (s *Server) classify(r reply) string {
	if s.opts.Classifier == nil {
		return "Uncategorized"
	}
	enh := ""
	if r.Enhanced != ([3]int{}) {
		enh = fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
	}
	return s.opts.Classifier.Classify(r.Code, enh, r.Text)
}

// internalReply is a reply mtakit makes up for failures that are not a
// peer's answer (DNS, connection, spool). The text is prefixed as
// KumoMTA's internal responses are, so automation rules can tell them
// apart.
func internalReply(code int, enhanced, text string) reply {
	r := reply{Code: code, Text: "KumoMTA internal: " + text}
	if enh, ok := parseEnhanced(enhanced); ok {
		r.Enhanced = enh
	}
	return r
}

// errorReply turns an error from a DeliverFunc into a reply.
func errorReply(err error) reply {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return reply{Code: se.Code, Enhanced: se.EnhancedCode, Text: se.Message}
	}
	return internalReply(451, "4.0.0", strings.TrimSpace(err.Error()))
}
