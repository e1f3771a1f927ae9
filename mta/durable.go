package mta

import (
	"context"
	"errors"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// errLogNotDurable answers a transaction whose Reception records could
// not be made durable in a log that keeps them so.
var errLogNotDurable = &smtp.SMTPError{
	Code:         451,
	EnhancedCode: smtp.EnhancedCode{4, 3, 0},
	Message:      "temporary log failure, try again later",
}

// commitReceptionLog makes the Reception records just logged for ids
// (whose shared body is body, if not zero) durable when the log sink
// keeps them so (logs.Syncs, set by logs.LocalConfig.SyncReception);
// otherwise it does nothing. missing is
// the error of a record that was not logged at all (see recordMissing).
// If a record is missing or the sync failed, the messages are removed
// from the spool and the transaction is refused with 451, as when storing
// fails: a 250 would promise a record the log may not have, and the
// client's retry loses nothing.
func (s *Server) commitReceptionLog(ids []spool.ID, body spool.ID, missing error) error {
	if !s.syncReception {
		return nil
	}
	err := logs.Sync(s.sink, logs.Reception)
	if err == nil {
		err = missing
	}
	if err == nil {
		return nil
	}
	s.log.Error("reception log records not durable; transaction refused, messages removed", "messages", len(ids), "err", err)
	for _, id := range ids {
		s.unstore(id)
	}
	if !body.IsZero() {
		if err := s.opts.DataSpool.Remove(context.Background(), body); err != nil {
			s.log.Warn("remove shared body after log failure", "body", body, "err", err)
		}
	}
	return errLogNotDurable
}

// recordMissing reports whether an error of Sink.Log means the record
// was not logged: it could not be encoded. Other errors report earlier
// write failures (the record itself was queued, and Sync covers it) or a
// closed sink (which Sync reports).
func recordMissing(err error) bool {
	var ee *logs.EncodeError
	return errors.As(err, &ee)
}

// syncReportLog makes the Reception records of dropped reports (oob.go)
// durable before their 250, when the sink keeps them so. Nothing was
// spooled for them, and their relayed siblings are queued already, so a
// failure is only logged.
func (s *Server) syncReportLog() {
	if !s.syncReception {
		return
	}
	if err := logs.Sync(s.sink, logs.Reception); err != nil {
		s.log.Error("reception log records of reports not durable", "err", err)
	}
}
