package mta

import (
	"bytes"
	"context"
	"fmt"

	"github.com/mtakit/mtakit/mta/bounce"
)

// maybeDSN sends a delivery status notification for one failed recipient
// of m to its envelope sender, when Options.DSN is on. Never for the null
// reverse-path: a bounce is never bounced.
func (s *Server) maybeDSN(m *queuedMessage, rcpt string, r reply, action string) {
	if !s.opts.DSN {
		return
	}
	sender := m.sender()
	if !bounce.ShouldSendDSN(sender) {
		return
	}
	ctx := context.Background()
	var headers []byte
	if data, err := s.loadData(ctx, m.id, m.bodyID()); err == nil {
		if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
			headers = data[:i+2]
		} else {
			headers = data
		}
	}
	status := "5.0.0"
	if r.Enhanced != ([3]int{}) {
		status = fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
	}
	msg, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: s.opts.Hostname,
		OriginalID:   m.id.String(),
		Sender:       sender,
		ArrivalDate:  m.id.Time(),
		Recipients: []bounce.RecipientStatus{{
			Address:        rcpt,
			Action:         action,
			Status:         status,
			DiagnosticCode: fmt.Sprintf("smtp; %d %s %s", r.Code, status, r.Text),
		}},
		OriginalHeaders: headers,
	})
	if err != nil {
		s.log.Error("build DSN", "id", m.id, "err", err)
		return
	}
	if _, err := s.Inject(ctx, &Submission{Sender: "", Recipients: []string{sender}, Data: msg, Protocol: "DSN"}); err != nil {
		s.log.Error("queue DSN", "id", m.id, "err", err)
	}
}
