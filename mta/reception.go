package mta

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// Submission is a message handed to Inject: the envelope, the content and
// the initial metadata.
type Submission struct {
	// Sender is the envelope sender; "" is the null reverse-path.
	Sender string
	// Recipients each become one message (KumoMTA's BifurcateAlways).
	Recipients []string
	// Data is the complete message with CRLF line endings.
	Data []byte
	// Meta is copied into every message's metadata.
	Meta map[string]any
	// Protocol is logged as reception_protocol; default "Inject".
	Protocol string
	// Admitted marks a submission accepted earlier (a deferred HTTP
	// injection answered 200 before its messages were generated): the
	// memory monitor's load shedding does not refuse it.
	Admitted bool
}

// Inject spools a message as if it had been received, one message per
// recipient, and returns their IDs once every one is durable. It runs the
// MessageReceived hook and the Signer like SMTP reception does.
func (s *Server) Inject(ctx context.Context, sub *Submission) ([]spool.ID, error) {
	if len(sub.Recipients) == 0 {
		return nil, errors.New("mta: inject: no recipients")
	}
	if err := s.mem.admit(sub.Admitted); err != nil { // memmon.go
		return nil, err
	}
	proto := sub.Protocol
	if proto == "" {
		proto = "Inject"
	}
	r := &reception{
		sender:   sub.Sender,
		data:     sub.Data,
		protocol: proto,
		meta:     map[string]any{MetaReceptionProtocol: proto},
	}
	for k, v := range sub.Meta {
		r.meta[k] = v
	}
	for _, rcpt := range sub.Recipients {
		r.batches = append(r.batches, []string{rcpt})
	}
	return s.receive(ctx, r)
}

// reception is one accepted transaction on its way into the spool.
type reception struct {
	sender   string
	batches  [][]string // recipients of each message to create
	data     []byte
	meta     map[string]any // copied into each message's meta
	protocol string
	session  *listener.SessionInfo // nil for Inject
	trace    listener.TraceHeaders
	received bool // add a Received header
}

// smtpHandler connects listeners to the server.
type smtpHandler struct{ s *Server }

func (h smtpHandler) HandleMessage(ctx context.Context, lm *listener.Message) ([]string, error) {
	info := lm.Session
	proto := "ESMTP"
	r := &reception{
		sender:   lm.Sender,
		data:     lm.Data,
		protocol: proto,
		session:  info,
		trace:    lm.TraceHeaders,
		received: !lm.TraceHeaders.DisableReceived,
		meta: map[string]any{
			MetaReceptionProtocol: proto,
			MetaReceivedVia:       info.LocalAddr.String(),
			MetaReceivedFrom:      info.PeerAddr.String(),
			MetaHostname:          info.Hostname,
			MetaEHLODomain:        info.EHLO,
		},
	}
	if info.TLS != nil {
		r.meta[MetaTLSCipher] = tls.CipherSuiteName(info.TLS.CipherSuite)
		r.meta[MetaTLSVersion] = tls.VersionName(info.TLS.Version)
	}
	// The connection meta (listener hooks' set_meta, authn_id, ...) is
	// copied into each message's meta, as KumoMTA does.
	for k, v := range lm.Meta {
		r.meta[k] = v
	}
	// Recipients of OOB / ARF listener domains are marked so the report
	// handling can find them; the disposition is per domain.
	for _, rc := range lm.Recipients {
		if d := rc.ListenerDomain; d != nil {
			if d.LogOOB.Enabled() {
				r.meta[MetaLogOOB] = string(d.LogOOB)
			}
			if d.LogARF.Enabled() {
				r.meta[MetaLogARF] = string(d.LogARF)
			}
		}
	}
	r.batches = batchRecipients(lm.Recipients, lm.BatchHandling)
	if hasReportDomain(lm.Recipients) { // OOB / ARF reports: see oob.go
		return h.s.receiveReports(ctx, r, lm.Recipients)
	}
	ids, err := h.s.receive(ctx, r)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out, nil
}

func (h smtpHandler) LogRejection(info *listener.SessionInfo, sender string, rcpts []string, resp *smtp.SMTPError) {
	now := time.Now()
	rec := &logs.Record{
		Type:                 logs.Rejection,
		Sender:               sender,
		Recipient:            rcpts,
		Response:             logResponse(resp.Code, resp.EnhancedCode, resp.Message),
		PeerAddress:          &logs.PeerAddress{Name: info.EHLO, Addr: info.PeerAddr.Addr().String()},
		BounceClassification: "Uncategorized",
		ReceptionProtocol:    ptr("ESMTP"),
		NodeID:               h.s.nodeID,
		SessionID:            info.ID,
		Meta:                 map[string]any{},
		Headers:              map[string]any{},
	}
	rec.SetTimes(now, now)
	if err := h.s.sink.Log(rec); err != nil {
		h.s.log.Error("log rejection", "err", err)
	}
}

// batchRecipients groups recipients into messages: one per recipient, or
// one per domain with BatchByDomain.
func batchRecipients(rcpts []listener.Recipient, mode listener.BatchHandling) [][]string {
	var out [][]string
	if mode != listener.BatchByDomain {
		for _, r := range rcpts {
			out = append(out, []string{r.Address})
		}
		return out
	}
	index := map[string]int{}
	for _, r := range rcpts {
		i, ok := index[r.Domain]
		if !ok {
			i = len(out)
			index[r.Domain] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], r.Address)
	}
	return out
}

// storeWindow bounds how many messages of one reception are prepared and
// being stored at once. A message whose policy hook rewrote the content
// holds its own copy, so a transaction's memory is about (1 + storeWindow)
// times its size whatever its recipient count, while the stores in the
// window still share group commits.
const storeWindow = 8

// receive turns a reception into spooled, queued, logged messages. It
// returns only when every message is durable, or an error after removing
// whatever it stored, so a failure leaves nothing half-written. Messages
// are prepared in recipient order (policy hooks run one at a time) and
// stored up to storeWindow at a time; a stored message keeps only its size.
// The messages of a transaction with several recipients share one stored
// body (see body.go).
func (s *Server) receive(ctx context.Context, r *reception) ([]spool.ID, error) {
	if err := s.space.check(); err != nil {
		return nil, err
	}
	type stored struct {
		m       *Message
		queued  *queuedMessage
		headers map[string]any
		size    int
	}
	out := make([]stored, 0, len(r.batches))
	storeStart := time.Now() // preparing and storing overlap: both are timed
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		storeErr error
		window   = make(chan struct{}, storeWindow)
		prepErr  error
		body     spool.ID // the shared body, once a message uses it
		sharers  int
	)
	fail := func(err error) {
		mu.Lock()
		storeErr = errors.Join(storeErr, err)
		mu.Unlock()
	}
	for _, rcpts := range r.batches {
		mu.Lock()
		failed := storeErr != nil
		mu.Unlock()
		if failed {
			break
		}
		m, err := s.prepare(ctx, r, rcpts)
		if err != nil {
			prepErr = err
			break
		}
		meta := &storedMeta{Sender: m.sender, Recipients: m.recipients, Meta: m.meta, Headers: s.recordHeaders(m)}
		size := m.size()
		own := m.Data // the complete message, for a message on its own
		shares := len(r.batches) > 1 && sameBytes(m.data, r.data)
		if shares {
			if body.IsZero() {
				body = spool.NewID()
				wg.Go(func() {
					if err := s.opts.DataSpool.Store(ctx, body, r.data); err != nil {
						fail(fmt.Errorf("mta: store shared body %s: %w", body, err))
					}
				})
			}
			meta.Body = body
			own = func() []byte { return m.prefix }
		}
		qm, err := newQueuedMessage(m.id, meta)
		if err != nil {
			// Meta a hook set that has no JSON form (NaN, a channel):
			// refuse as a spool failure, as before.
			fail(err)
			break
		}
		if shares {
			sharers++
		}
		out = append(out, stored{m: m, queued: qm, headers: meta.Headers, size: size})
		window <- struct{}{}
		wg.Go(func() {
			defer func() { <-window }()
			if err := s.store(ctx, m.id, own(), qm.encode()); err != nil {
				fail(err)
			}
			m.data, m.prefix = nil, nil // durable now; keep only what scheduling and the log need
		})
	}
	wg.Wait()
	if prepErr != nil || storeErr != nil {
		for _, st := range out {
			s.unstore(st.m.id)
		}
		if !body.IsZero() {
			if err := s.opts.DataSpool.Remove(context.Background(), body); err != nil {
				s.log.Warn("remove shared body after failed store", "body", body, "err", err)
			}
		}
		if prepErr != nil {
			return nil, prepErr
		}
		s.log.Error("spool write failed; transaction refused", "err", storeErr)
		return nil, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary spool failure, try again later"}
	}
	s.observeSpooled(time.Since(storeStart), len(out))

	ids := make([]spool.ID, len(out))
	qms := make([]*queuedMessage, len(out))
	now := time.Now()
	var missing error // a Reception record not logged (durable.go)
	for i, st := range out {
		ids[i] = st.m.id
		qms[i] = st.queued
		if err := s.logReception(r, st.m, st.size, st.queued.queue, st.headers, now); recordMissing(err) {
			missing = err
		}
	}
	if err := s.commitReceptionLog(ids, body, missing); err != nil {
		return nil, err
	}
	if sharers > 0 {
		s.bodies.add(body, sharers)
	}
	for _, qm := range qms {
		s.sched.add(qm)
	}
	return ids, nil
}

// sameBytes reports whether a and b are the same slice of memory: a
// message whose content is still the received data, not a rewrite.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// prepare builds one message: ID, trace headers, policy hook, signature.
func (s *Server) prepare(ctx context.Context, r *reception, rcpts []string) (*Message, error) {
	m := &Message{
		id:         spool.NewID(),
		sender:     r.sender,
		recipients: rcpts,
		meta:       make(map[string]any, len(r.meta)+4),
		data:       r.data,
	}
	for k, v := range r.meta {
		m.meta[k] = v
	}
	if r.received {
		m.PrependRaw(receivedHeader(r, m))
	}
	if hook := s.opts.Policy.MessageReceived; hook != nil {
		if err := hook(ctx, m); err != nil {
			return nil, policyError(err)
		}
	}
	if s.opts.Signer != nil {
		sig, err := s.opts.Signer.Sign(m.joined())
		if err != nil {
			return nil, policyError(fmt.Errorf("mta: dkim sign %s: %w", m.id, err))
		}
		m.PrependRaw(sig)
	}
	if r.session != nil && !r.trace.DisableSupplemental {
		m.PrependHeader(r.trace.HeaderName, supplementalHeader(m, r.trace.IncludeMetaNames))
	}
	return m, nil
}

// store writes data and the encoded meta b together: in one commit (one
// sync) when the spools share storage (badgerspool.OpenPair), else
// concurrently, so a lone sender waits for one sync, not two. A crash
// between two separate commits leaves meta without data or data without
// meta; neither was acknowledged, and recovery discards the former.
func (s *Server) store(ctx context.Context, id spool.ID, data, b []byte) error {
	return spool.StoreAll(ctx,
		spool.Write{Spool: s.opts.DataSpool, ID: id, Data: data},
		spool.Write{Spool: s.opts.MetaSpool, ID: id, Data: b})
}

// unstore removes a partially stored message. A removal that fails leaves
// an unacknowledged orphan, which recovery handles.
func (s *Server) unstore(id spool.ID) {
	ctx := context.Background()
	if err := s.opts.MetaSpool.Remove(ctx, id); err != nil {
		s.log.Warn("remove meta after failed store", "id", id, "err", err)
	}
	if err := s.opts.DataSpool.Remove(ctx, id); err != nil {
		s.log.Warn("remove data after failed store", "id", id, "err", err)
	}
}

func (s *Server) logReception(r *reception, m *Message, size int, queue string, headers map[string]any, now time.Time) error {
	rec := &logs.Record{
		Type:                 logs.Reception,
		ID:                   m.id.String(),
		Sender:               m.sender,
		Recipient:            m.recipients,
		Queue:                queue,
		Size:                 int64(size),
		Response:             logResponse(250, smtp.EnhancedCode{2, 0, 0}, "OK ids="+m.id.String()),
		NumAttempts:          0,
		BounceClassification: "Uncategorized",
		ReceptionProtocol:    ptr(r.protocol),
		NodeID:               s.nodeID,
		Meta:                 s.recordMeta(m.meta),
		Headers:              headers,
	}
	if r.session != nil {
		rec.PeerAddress = &logs.PeerAddress{Name: r.session.EHLO, Addr: r.session.PeerAddr.Addr().String()}
		rec.SessionID = r.session.ID
		if t := r.session.TLS; t != nil {
			rec.TLSCipher = tls.CipherSuiteName(t.CipherSuite)
			rec.TLSProtocolVersion = tls.VersionName(t.Version)
		}
	}
	rec.SetTimes(now, m.Created())
	err := s.sink.Log(rec)
	if err != nil {
		s.log.Error("log reception", "id", m.id, "err", err)
	}
	return err
}

// recordMeta picks the Options.LogMeta keys for a log record.
func (s *Server) recordMeta(meta map[string]any) map[string]any {
	out := make(map[string]any, len(s.opts.LogMeta))
	for _, k := range s.opts.LogMeta {
		if v, ok := meta[k]; ok {
			out[k] = v
		}
	}
	return out
}

// recordHeaders captures the Options.LogHeaders values of a message; nil
// when none are configured or present.
func (s *Server) recordHeaders(m *Message) map[string]any {
	if len(s.opts.LogHeaders) == 0 {
		return nil
	}
	out := make(map[string]any, len(s.opts.LogHeaders))
	for _, name := range s.opts.LogHeaders {
		if v, ok := m.Header(name); ok {
			out[name] = v
		}
	}
	return out
}

func logResponse(code int, enh smtp.EnhancedCode, text string) logs.Response {
	resp := logs.Response{Code: code, Content: text}
	if enh != (smtp.EnhancedCode{}) && enh != smtp.NoEnhancedCode {
		resp.EnhancedCode = &logs.EnhancedCode{Class: enh[0], Subject: enh[1], Detail: enh[2]}
	}
	return resp
}

// receivedHeader builds the RFC 5321 trace field for a message.
func receivedHeader(r *reception, m *Message) []byte {
	var b strings.Builder
	b.WriteString("Received: from ")
	if si := r.session; si != nil {
		b.WriteString(si.EHLO + " (" + si.EHLO + " [" + si.PeerAddr.Addr().String() + "])\r\n\tby " + si.Hostname)
	} else {
		b.WriteString("localhost\r\n\tby localhost")
	}
	with := r.protocol
	if r.session != nil && r.session.TLS != nil {
		with += "S"
	}
	b.WriteString(" (mtakit) with " + with + " id " + m.id.String())
	if len(m.recipients) == 1 {
		b.WriteString("\r\n\tfor <" + m.recipients[0] + ">")
	}
	b.WriteString(";\r\n\t" + m.Created().Format(time.RFC1123Z) + "\r\n")
	return []byte(b.String())
}

// supplementalHeader builds KumoMTA's X-KumoRef value: base64 of a JSON
// object holding a marker, the recipient and the chosen meta values.
func supplementalHeader(m *Message, metaNames []string) string {
	obj := map[string]any{"_@_": `\_/`}
	if len(m.recipients) > 0 {
		obj["recipient"] = m.recipients[0]
	}
	for _, k := range metaNames {
		if v, ok := m.meta[k]; ok {
			obj[k] = v
		}
	}
	b, _ := json.Marshal(obj) // values came from JSON-safe meta
	return base64.StdEncoding.EncodeToString(b)
}

// Reject returns an error that makes the server answer with code and text,
// like KumoMTA's kumo.reject. An enhanced status code at the start of text
// ("5.7.1 go away") is used as such.
func Reject(code int, text string) error {
	e := &smtp.SMTPError{Code: code, Message: text}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if enh, ok := parseEnhanced(first); ok {
			e.EnhancedCode, e.Message = enh, rest
		}
	}
	return e
}

func parseEnhanced(s string) (smtp.EnhancedCode, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}, false
	}
	var out smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return smtp.EnhancedCode{}, false
		}
		out[i] = n
	}
	return out, out[0] >= 2 && out[0] <= 5
}

// policyError keeps an SMTP reply from a hook (as Reject makes) and turns
// anything else into a temporary failure, so that a bug in a policy never
// loses mail: the client retries.
func policyError(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	var de *dkim.RejectError
	if errors.As(err, &de) {
		return &smtp.SMTPError{Code: de.Code, EnhancedCode: smtp.EnhancedCode(de.EnhancedCode), Message: de.Message}
	}
	return fmt.Errorf("mta: policy: %w", err)
}

func ptr[T any](v T) *T { return &v }
