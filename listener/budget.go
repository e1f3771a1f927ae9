package listener

import (
	"bytes"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// Budget bounds the bytes of message data that receptions hold in memory
// at once, across every listener sharing it. A transaction that would go
// beyond it is read to its end (to stay in step with the client) without
// keeping the bytes, and refused with 452 4.3.1, a temporary failure: the
// client tries again later instead of the server growing without bound.
// A nil *Budget sets no limit.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a Budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// InUse returns the bytes held now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit returns the budget's size.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

func (b *Budget) tryAcquire(n int64) bool {
	if b == nil {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *Budget) release(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}

// errOverBudget answers a transaction that found no room in the Budget.
var errOverBudget = &smtp.SMTPError{
	Code:         452,
	EnhancedCode: smtp.EnhancedCode{4, 3, 1},
	Message:      "insufficient system resources to accept the message now, try again later",
}

// budgetedBuffer is the DATA buffer of one transaction: it reserves its
// capacity in the budget as it grows, and once the budget refuses, it
// drops further bytes and reports it.
type budgetedBuffer struct {
	buf      *bytes.Buffer
	budget   *Budget
	reserved int64
	over     bool
}

func (w *budgetedBuffer) Write(p []byte) (int, error) {
	if w.over {
		return len(p), nil
	}
	// Reserve what the buffer will need: grow by at least doubling, as
	// bytes.Buffer does, so reservations stay few.
	if need := int64(w.buf.Len() + len(p)); need > w.reserved {
		want := max(need, 2*w.reserved, 64<<10)
		if !w.budget.tryAcquire(want - w.reserved) {
			w.over = true
			return len(p), nil
		}
		w.reserved = want
		w.buf.Grow(int(want) - w.buf.Len())
	}
	return w.buf.Write(p)
}

func (w *budgetedBuffer) done() { w.budget.release(w.reserved) }
