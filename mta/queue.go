package mta

import (
	"sync"

	"github.com/mtakit/mtakit/spool"
)

// queuedMessage is the in-memory handle on a spooled message: enough to
// schedule it without loading its data.
type queuedMessage struct {
	id    spool.ID
	queue string
	meta  *storedMeta
}

// scheduledQueues holds every spooled message by scheduled queue name.
//
// It is the hand-off point to the delivery engine: reception and recovery
// insert here. Until that engine exists, messages stay here, listed and
// countable, and remain in the spool.
type scheduledQueues struct {
	mu     sync.Mutex
	queues map[string]map[spool.ID]*queuedMessage
	total  int
}

func newScheduledQueues() *scheduledQueues {
	return &scheduledQueues{queues: make(map[string]map[spool.ID]*queuedMessage)}
}

func (q *scheduledQueues) insert(m *queuedMessage) {
	q.mu.Lock()
	defer q.mu.Unlock()
	byID := q.queues[m.queue]
	if byID == nil {
		byID = make(map[spool.ID]*queuedMessage)
		q.queues[m.queue] = byID
	}
	if _, dup := byID[m.id]; !dup {
		q.total++
	}
	byID[m.id] = m
}

func (q *scheduledQueues) summary() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(q.queues))
	for name, byID := range q.queues {
		out[name] = len(byID)
	}
	return out
}

func (q *scheduledQueues) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}

func (q *scheduledQueues) ids(queue string) []spool.ID {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]spool.ID, 0, len(q.queues[queue]))
	for id := range q.queues[queue] {
		out = append(out, id)
	}
	return out
}
