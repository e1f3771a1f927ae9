package mta

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// MessageInfo is what InspectMessage reports about a queued message
// (KumoMTA's inspect-message): its envelope, metadata and scheduling
// state as spooled.
type MessageInfo struct {
	ID          spool.ID
	Sender      string
	Recipients  []string
	Queue       string
	Meta        map[string]any
	Due         time.Time // zero: due at once
	NumAttempts int
	// Data is the message content, loaded only when asked for.
	Data []byte
}

// ErrUnknownMessage is returned by InspectMessage for an ID that is not
// in the spool.
var ErrUnknownMessage = errors.New("mta: no such message in the spool")

// InspectMessage returns the spooled state of message id, with its
// content when wantData is set. The due time and attempt count are those
// last made durable, which is what a restart would use.
func (s *Server) InspectMessage(ctx context.Context, id spool.ID, wantData bool) (*MessageInfo, error) {
	b, err := s.opts.MetaSpool.Load(ctx, id)
	if errors.Is(err, spool.ErrNotFound) {
		return nil, fmt.Errorf("inspect %s: %w", id, ErrUnknownMessage)
	}
	if err != nil {
		return nil, fmt.Errorf("mta: inspect %s: %w", id, err)
	}
	m, err := decodeMeta(id, b)
	if err != nil {
		return nil, err
	}
	msg := &Message{id: id, sender: m.Sender, recipients: m.Recipients, meta: m.Meta}
	info := &MessageInfo{
		ID: id, Sender: m.Sender, Recipients: m.Recipients, Queue: msg.QueueName(),
		Meta: maps.Clone(m.Meta), Due: m.Due, NumAttempts: m.NumAttempts,
	}
	if wantData {
		if info.Data, err = s.loadData(ctx, id, m.Body); err != nil {
			return nil, fmt.Errorf("mta: inspect %s: load data: %w", id, err)
		}
	}
	return info, nil
}
