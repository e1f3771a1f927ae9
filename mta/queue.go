package mta

import (
	"container/heap"
	"sync"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// queuedMessage is the in-memory handle on a spooled message: enough to
// schedule it without loading its data. Its fields are guarded by the
// scheduler's lock while it is scheduled, and owned by whoever took it from
// the scheduler (a dispatcher or a delivery worker) otherwise.
//
// Every live message has one, so it is kept small: the scheduling state in
// fields, the envelope, metadata and log headers in their packed binary
// form (see meta.go), read through the methods in queued.go.
type queuedMessage struct {
	id    spool.ID
	queue string // interned: messages of a queue share it
	// due is when the message is next due, in Unix nanoseconds; 0: at once.
	due      int64
	attempts int32 // delivery attempts made so far
	index    int32 // position in the due heap; -1 when not scheduled
	// heldBy is the suspension that holds the message, if any, so that
	// lifting it early releases exactly its messages.
	heldBy *QueueRule
	// packed is the envelope, metadata and log headers; replaced as a
	// whole, never changed in place.
	packed []byte
}

// dueHeap orders scheduled messages by due time.
type dueHeap []*queuedMessage

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = int32(i), int32(j)
}
func (h *dueHeap) Push(x any) {
	m := x.(*queuedMessage)
	m.index = int32(len(*h))
	*h = append(*h, m)
}
func (h *dueHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	m.index = -1
	*h = old[:len(old)-1]
	return m
}

// scheduler holds every live message (spooled and not yet finished) and
// releases scheduled ones when they are due. Messages being dispatched or
// delivered stay live but leave the heap.
type scheduler struct {
	mu      sync.Mutex
	heap    dueHeap
	live    map[spool.ID]*queuedMessage
	byQueue map[string]int
	held    bool // delivery held: nothing is released
	wake    chan struct{}
}

func newScheduler() *scheduler {
	return &scheduler{
		live:    make(map[spool.ID]*queuedMessage),
		byQueue: make(map[string]int),
		wake:    make(chan struct{}, 1),
	}
}

// add registers a new live message and schedules it.
func (s *scheduler) add(m *queuedMessage) {
	s.mu.Lock()
	if _, dup := s.live[m.id]; !dup {
		s.live[m.id] = m
		s.byQueue[m.queue]++
	}
	heap.Push(&s.heap, m)
	s.mu.Unlock()
	s.poke()
}

// addRecovered registers messages found in the spool at start-up without
// ordering the heap; recover calls restoreOrder once when all are in.
// Nothing else runs on the scheduler meanwhile.
func (s *scheduler) addRecovered(batch []*queuedMessage) {
	s.mu.Lock()
	for _, m := range batch {
		if _, dup := s.live[m.id]; dup {
			continue
		}
		s.live[m.id] = m
		s.byQueue[m.queue]++
		m.index = int32(len(s.heap))
		s.heap = append(s.heap, m)
	}
	s.mu.Unlock()
}

// restoreOrder orders the heap after addRecovered: O(n), where adding
// one message at a time costs O(n log n) under the lock.
func (s *scheduler) restoreOrder() {
	s.mu.Lock()
	heap.Init(&s.heap)
	s.mu.Unlock()
	s.poke()
}

// reschedule puts a live message taken earlier back into the heap.
func (s *scheduler) reschedule(m *queuedMessage) {
	s.mu.Lock()
	heap.Push(&s.heap, m)
	s.mu.Unlock()
	s.poke()
}

// finish forgets a message that was delivered, bounced or expired, and
// reports whether it was live until now.
func (s *scheduler) finish(m *queuedMessage) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[m.id]; !ok {
		return false
	}
	delete(s.live, m.id)
	if s.byQueue[m.queue]--; s.byQueue[m.queue] <= 0 {
		delete(s.byQueue, m.queue)
	}
	return true
}

func (s *scheduler) setHeld(held bool) {
	s.mu.Lock()
	s.held = held
	s.mu.Unlock()
	s.poke()
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run releases due messages to out until stop closes.
func (s *scheduler) run(stop <-chan struct{}, out chan<- *queuedMessage) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var next *queuedMessage
		wait := time.Hour
		s.mu.Lock()
		if !s.held && len(s.heap) > 0 {
			if d := time.Until(s.heap[0].dueTime()); d <= 0 {
				next = heap.Pop(&s.heap).(*queuedMessage)
			} else {
				wait = d
			}
		}
		s.mu.Unlock()
		if next != nil {
			select {
			case out <- next:
				continue
			case <-stop:
				return
			}
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-s.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-stop:
			return
		}
	}
}

// takeMatching removes the scheduled (waiting) messages that pick selects
// from the heap and returns them; they stay live and are owned by the
// caller.
func (s *scheduler) takeMatching(pick func(*queuedMessage) bool) []*queuedMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*queuedMessage
	keep := s.heap[:0]
	for _, m := range s.heap {
		if pick(m) {
			m.index = -1
			out = append(out, m)
		} else {
			m.index = int32(len(keep))
			keep = append(keep, m)
		}
	}
	clear(s.heap[len(keep):])
	s.heap = keep
	heap.Init(&s.heap)
	return out
}

// releaseMatching makes the scheduled messages that pick selects due now.
func (s *scheduler) releaseMatching(pick func(*queuedMessage) bool) {
	s.mu.Lock()
	now := time.Now()
	for _, m := range s.heap {
		if pick(m) && m.dueTime().After(now) {
			m.setDue(now)
			m.heldBy = nil
		}
	}
	heap.Init(&s.heap)
	s.mu.Unlock()
	s.poke()
}

// isLive reports whether id is a message the scheduler knows.
func (s *scheduler) isLive(id spool.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.live[id]
	return ok
}

func (s *scheduler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

func (s *scheduler) summary() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.byQueue))
	for q, n := range s.byQueue {
		out[q] = n
	}
	return out
}

func (s *scheduler) ids(queue string) []spool.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []spool.ID
	for id, m := range s.live {
		if m.queue == queue {
			out = append(out, id)
		}
	}
	return out
}
