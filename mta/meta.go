package mta

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// storedMeta is what the meta spool holds for a message: the envelope, the
// metadata and the scheduling state. It is JSON so that it stays readable
// with generic tools and can grow fields without a migration.
type storedMeta struct {
	Version    int            `json:"v"`
	Sender     string         `json:"sender"`
	Recipients []string       `json:"recipients"`
	Meta       map[string]any `json:"meta,omitempty"`
	// Headers holds the values of Options.LogHeaders captured at
	// reception, so records of later events can carry them without
	// loading the message.
	Headers     map[string]any `json:"headers,omitempty"`
	Due         time.Time      `json:"due,omitzero"`
	NumAttempts int            `json:"num_attempts,omitempty"`
	// Body, when set, names a data-spool record holding the content this
	// message shares with the other recipients of its transaction; the
	// message's own data record then holds only the header fields
	// prepended for it (trace, signature). Zero: the own data record is
	// the complete message.
	Body spool.ID `json:"body,omitzero"`
}

const metaVersion = 1

func encodeMeta(m *storedMeta) ([]byte, error) {
	m.Version = metaVersion
	return json.Marshal(m)
}

func decodeMeta(id spool.ID, b []byte) (*storedMeta, error) {
	var m storedMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("mta: decode meta %s: %w", id, err)
	}
	if m.Version != metaVersion {
		return nil, fmt.Errorf("mta: decode meta %s: unsupported version %d", id, m.Version)
	}
	return &m, nil
}
