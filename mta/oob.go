package mta

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/mta/reports"
	"github.com/mtakit/mtakit/spool"
)

// Meta keys of OOB and Feedback records, the reports received at log_oob
// and log_arf listener domains.
//
// A message whose recipients are at a listener domain with log_oob or
// log_arf is read as a report before it is queued, one batch (one message
// to create) at a time, the batch's first recipient deciding as in
// KumoMTA:
//
//   - With log_arf, a message that mta/reports parses as an RFC 5965
//     feedback report is logged as one Feedback record, carrying the
//     report in feedback_report (KumoMTA's ARFReport shape).
//   - Otherwise, with log_oob, a message parsed as a delivery status
//     notification (RFC 3464, or one of the non-standard bounce texts
//     the package knows) is logged as one OOB record per failed
//     recipient: sender is the address the bounce was sent to (the
//     sender of the original), recipient the original recipient,
//     response the recipient's Status and Diagnostic-Code, peer_address
//     the Reporting-MTA name with the client's address, and
//     bounce_classification the Classifier's verdict on that response.
//     Delayed, delivered, relayed and expanded recipients are not logged.
//   - A message that is neither is still accepted and logged, as an OOB
//     record (or a Feedback record when only log_arf is set, or when it
//     is a feedback report with a defect) with response code 500, the
//     reason in its content and in meta "report_error", and recipient the
//     envelope recipients. Nothing is dropped without a record.
//
// Then the disposition of the domain applies: LogThenRelay queues the
// message as any other (with its Reception record and so on), and
// LogThenDrop accepts it without storing it. As in KumoMTA, a bounce has
// a Reception record either way, while the Feedback record stands in for
// the Reception record of a dropped feedback report; so every report
// accepted leaves a record, even a DSN with no failed recipient. The
// records carry the ID of the stored message, or a fresh ID for a
// dropped one.
//
// When the report embeds the original message (or its headers), the
// records' meta correlate it: "original_queue_id" is the spool ID that
// mtakit wrote in its Received field, "original_message_id" the
// Message-ID, and, for OOB records, "supplemental_trace" the decoded
// X-KumoRef object (recipient and the listener's include_meta_names
// values); Feedback records carry the latter as
// feedback_report.supplemental_trace, as KumoMTA does.
//
// Differences from KumoMTA: a relayed feedback report has a Reception
// record besides its Feedback record (KumoMTA logs only the latter); an
// unparseable report is logged as such rather than treated as ordinary
// mail; the policy hook (MessageReceived) runs only for relayed
// messages, so a dropped report's records carry the queue and meta it
// had on arrival.
const (
	MetaOriginalQueueID   = "original_queue_id"
	MetaOriginalMessageID = "original_message_id"
	MetaSupplementalTrace = "supplemental_trace"
	MetaReportError       = "report_error"
)

// hasReportDomain reports whether any recipient is at a listener domain
// that accepts OOB or ARF reports.
func hasReportDomain(rcpts []listener.Recipient) bool {
	for _, r := range rcpts {
		if d := r.ListenerDomain; d != nil && (d.LogOOB.Enabled() || d.LogARF.Enabled()) {
			return true
		}
	}
	return false
}

// parsedReport is what the report parsers made of a message; each parser
// runs at most once per transaction.
type parsedReport struct {
	data           []byte
	arf            *reports.FeedbackReport
	arfErr         error
	dsn            *reports.DSN
	dsnErr         error
	triedARF, tDSN bool
}

func (p *parsedReport) parseARF() (*reports.FeedbackReport, error) {
	if !p.triedARF {
		p.triedARF = true
		p.arf, p.arfErr = reports.ParseARF(p.data)
	}
	return p.arf, p.arfErr
}

func (p *parsedReport) parseDSN() (*reports.DSN, error) {
	if !p.tDSN {
		p.tDSN = true
		p.dsn, p.dsnErr = reports.ParseDSN(p.data)
	}
	return p.dsn, p.dsnErr
}

// reportBatch is one batch addressed to a report domain.
type reportBatch struct {
	rcpts []string
	kind  logs.RecordType // OOB or Feedback
	arf   *reports.FeedbackReport
	dsn   *reports.DSN
	err   error // why the report could not be parsed
	relay bool

	relayIndex int // index among the relayed batches, or -1
	id         spool.ID
}

// classifyBatch decides how the batch for rcpts at domain d is handled.
func classifyBatch(p *parsedReport, d *listener.ListenerDomain, rcpts []string) *reportBatch {
	b := &reportBatch{rcpts: rcpts}
	var arfErr error
	if d.LogARF.Enabled() {
		arf, err := p.parseARF()
		if err == nil {
			b.kind, b.arf, b.relay = logs.Feedback, arf, d.LogARF == listener.LogThenRelay
			return b
		}
		arfErr = err
	}
	if d.LogOOB.Enabled() && (arfErr == nil || errors.Is(arfErr, reports.ErrNotARF)) {
		dsn, err := p.parseDSN()
		b.kind, b.dsn, b.err, b.relay = logs.OOB, dsn, err, d.LogOOB == listener.LogThenRelay
		return b
	}
	b.kind, b.err, b.relay = logs.Feedback, arfErr, d.LogARF == listener.LogThenRelay
	return b
}

// receiveReports receives a transaction with recipients at report
// domains: the batches that are reports are logged, and those that are to
// be relayed (any batch not addressed to a report domain, and reports at
// LogThenRelay domains) are received as usual. It returns the IDs for the
// 250 reply.
func (s *Server) receiveReports(ctx context.Context, r *reception, rcpts []listener.Recipient) ([]string, error) {
	domains := make(map[string]*listener.ListenerDomain, len(rcpts))
	for _, rc := range rcpts {
		domains[rc.Address] = rc.ListenerDomain
	}
	p := &parsedReport{data: r.data}
	var reps []*reportBatch
	relay := *r
	relay.batches = nil
	for _, batch := range r.batches {
		d := domains[batch[0]]
		if d == nil || (!d.LogOOB.Enabled() && !d.LogARF.Enabled()) {
			relay.batches = append(relay.batches, batch)
			continue
		}
		b := classifyBatch(p, d, batch)
		b.relayIndex = -1
		if b.relay {
			b.relayIndex = len(relay.batches)
			relay.batches = append(relay.batches, batch)
		}
		reps = append(reps, b)
	}

	var ids []spool.ID
	if len(relay.batches) > 0 {
		var err error
		if ids, err = s.receive(ctx, &relay); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(r.batches))
	for _, id := range ids {
		out = append(out, id.String())
	}
	// receive returns IDs in batch order: a relayed report gets its
	// message's ID, a dropped one a fresh ID.
	for _, b := range reps {
		if b.relayIndex >= 0 {
			b.id = ids[b.relayIndex]
		} else {
			b.id = spool.NewID()
			out = append(out, b.id.String())
		}
		s.logReport(r, b)
	}
	s.syncReportLog()
	return out, nil
}

// logReport writes the records of one report batch.
func (s *Server) logReport(r *reception, b *reportBatch) {
	m := &Message{id: b.id, sender: r.sender, recipients: b.rcpts, meta: r.meta, data: r.data}
	now := time.Now()
	base := logs.Record{
		Type:                 b.kind,
		ID:                   b.id.String(),
		Sender:               r.sender,
		Recipient:            b.rcpts,
		Queue:                m.QueueName(),
		Size:                 int64(len(r.data)),
		Response:             logResponse(250, smtp.EnhancedCode{2, 0, 0}, "OK ids="+b.id.String()),
		BounceClassification: logs.Uncategorized,
		ReceptionProtocol:    ptr(r.protocol),
		NodeID:               s.nodeID,
		Meta:                 s.recordMeta(r.meta),
		Headers:              s.recordHeaders(m),
	}
	if si := r.session; si != nil {
		base.PeerAddress = &logs.PeerAddress{Name: si.EHLO, Addr: si.PeerAddr.Addr().String()}
		base.SessionID = si.ID
	}
	base.SetTimes(now, m.Created())
	if b.kind == logs.OOB && !b.relay {
		// As KumoMTA, a dropped bounce still has its Reception record
		// (a relayed one gets it from receive); a Feedback record stands
		// in for the Reception record of a feedback report.
		s.logReception(r, m, len(r.data), base.Queue, base.Headers, now)
	}

	switch {
	case b.err != nil:
		what := "delivery status notification"
		if b.kind == logs.Feedback {
			what = "feedback report"
		}
		rec := base
		rec.Meta = s.recordMeta(r.meta)
		rec.Response = logs.Response{Code: 500, Content: "mtakit: unparseable " + what + ": " + b.err.Error()}
		rec.Meta[MetaReportError] = b.err.Error()
		s.writeReportRecord(&rec)
	case b.arf != nil:
		rec := base
		rec.Meta = s.recordMeta(r.meta)
		addCorrelation(rec.Meta, b.arf.Correlation(), false)
		fr, err := json.Marshal(b.arf)
		if err != nil { // cannot happen: the report is strings and JSON values
			s.log.Error("encode feedback report", "id", b.id, "err", err)
		}
		rec.FeedbackReport = fr
		s.writeReportRecord(&rec)
	case b.dsn != nil:
		corr := b.dsn.Original.Correlation()
		// The bounce is addressed to the sender of the original message.
		sender := r.sender
		if len(b.rcpts) > 0 {
			sender = b.rcpts[0]
		}
		for _, rr := range b.dsn.Failed() {
			rec := base
			rec.Meta = s.recordMeta(r.meta)
			addCorrelation(rec.Meta, corr, true)
			rec.Sender = sender
			rec.Recipient = logs.Recipients{rr.Recipient()}
			rec.Size = 0
			rep := rr.Reply()
			rec.Response = logs.Response{Code: rep.Code, Content: rep.Text}
			if st, err := reports.ParseStatus(rep.Enhanced); err == nil {
				rec.Response.EnhancedCode = &logs.EnhancedCode{Class: st.Class, Subject: st.Subject, Detail: st.Detail}
			}
			if name := b.dsn.ReportingMTA.Name; name != "" {
				addr := netip.IPv4Unspecified().String()
				if base.PeerAddress != nil {
					addr = base.PeerAddress.Addr
				}
				rec.PeerAddress = &logs.PeerAddress{Name: name, Addr: addr}
			}
			if when := rr.LastAttemptDate; !when.IsZero() {
				rec.SetTimes(when, m.Created())
			}
			if c := s.opts.Classifier; c != nil {
				rec.BounceClassification = c.Classify(rep.Code, rep.Enhanced, rep.Text)
			}
			s.writeReportRecord(&rec)
		}
	}
}

func (s *Server) writeReportRecord(rec *logs.Record) {
	if err := s.sink.Log(rec); err != nil {
		s.log.Error("log report", "type", rec.Type, "id", rec.ID, "err", err)
	}
}

// addCorrelation records in meta what identifies the reported message.
func addCorrelation(meta map[string]any, c reports.Correlation, withTrace bool) {
	if c.QueueID != "" {
		meta[MetaOriginalQueueID] = c.QueueID
	}
	if c.MessageID != "" {
		meta[MetaOriginalMessageID] = c.MessageID
	}
	if withTrace && c.Trace != nil {
		meta[MetaSupplementalTrace] = c.Trace
	}
}
