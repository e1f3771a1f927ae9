package spool

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"
)

// ID identifies a message in the spool and in the logs. Its text form is 32
// lowercase hexadecimal characters, like KumoMTA's spool IDs.
//
// The first 8 bytes are the creation time in nanoseconds since the Unix
// epoch (big-endian), so IDs sort in creation order both as bytes and as
// text; the last 8 bytes identify the process that made them. Within one
// process IDs are strictly increasing even if the clock steps back.
//
// Deviation from KumoMTA: KumoMTA uses a UUIDv1, whose text form is not
// time-ordered; mtakit's layout is chosen so that Enumerate returns messages
// oldest first.
type ID [16]byte

var (
	lastNanos atomic.Int64
	nodeID    [8]byte
)

func init() {
	if _, err := rand.Read(nodeID[:]); err != nil {
		panic(fmt.Sprintf("spool: cannot read random node id: %v", err))
	}
}

// NewID returns a new, unique ID stamped with the current time.
func NewID() ID {
	now := time.Now().UnixNano()
	for {
		last := lastNanos.Load()
		next := now
		if next <= last {
			next = last + 1
		}
		if lastNanos.CompareAndSwap(last, next) {
			var id ID
			binary.BigEndian.PutUint64(id[:8], uint64(next))
			copy(id[8:], nodeID[:])
			return id
		}
	}
}

// ParseID parses the 32-character hexadecimal form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 32 {
		return id, fmt.Errorf("spool: parse id %q: want 32 hex characters, got %d", s, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("spool: parse id %q: %w", s, err)
	}
	return id, nil
}

// String returns the 32-character lowercase hexadecimal form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Time returns the creation time encoded in the ID.
func (id ID) Time() time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(id[:8]))).UTC()
}

// FromThisProcess reports whether id was made by NewID in this process.
// An ID from an earlier run of the program is not, so start-up code can
// tell leftovers of a crashed run from messages being received now.
func (id ID) FromThisProcess() bool { return [8]byte(id[8:]) == nodeID }

// IsZero reports whether id is the zero ID, which NewID never returns.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
