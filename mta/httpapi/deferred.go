package httpapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mtakit/mtakit/spool"
)

// deferredEntry is a request accepted with deferred_generation, as kept
// in Config.DeferredQueue until its messages are spooled.
type deferredEntry struct {
	Peer    string        `json:"peer"`
	Request InjectRequest `json:"request"`
}

// deferGeneration answers a deferred_generation request: the request is
// stored in the deferred queue (when there is one) before the caller
// answers, then generated in the background and removed.
func (a *API) deferGeneration(ctx context.Context, req *InjectRequest, inj *injection) error {
	var id spool.ID
	if q := a.cfg.DeferredQueue; q != nil {
		b, err := json.Marshal(deferredEntry{Peer: inj.peer, Request: *req})
		if err != nil {
			return fmt.Errorf("encode deferred request: %w", err)
		}
		id = spool.NewID()
		if err := q.Store(ctx, id, b); err != nil {
			return fmt.Errorf("store deferred request: %w", err)
		}
	}
	a.bg.Go(func() { a.generateDeferred(id, inj) })
	return nil
}

// generateDeferred spools the messages of a deferred request, then
// forgets the request.
func (a *API) generateDeferred(id spool.ID, inj *injection) {
	inj.admitted = true // answered 200 already: generate even while load shedding
	resp := a.generate(context.Background(), inj)
	if resp.FailCount > 0 {
		a.log.Error("deferred injection failed for some recipients", "failed", resp.FailedRecipients, "errors", resp.Errors)
	}
	if q := a.cfg.DeferredQueue; q != nil && !id.IsZero() {
		if err := q.Remove(context.Background(), id); err != nil {
			a.log.Error("remove generated deferred request; it may be generated again", "id", id, "err", err)
		}
	}
}

// resumeDeferred generates the requests a previous run accepted and did
// not finish.
func (a *API) resumeDeferred() error {
	q := a.cfg.DeferredQueue
	if q == nil {
		return nil
	}
	type pending struct {
		id  spool.ID
		inj *injection
	}
	var todo []pending
	err := q.Enumerate(context.Background(), func(id spool.ID, b []byte) error {
		var e deferredEntry
		if err := json.Unmarshal(b, &e); err != nil {
			a.log.Error("unreadable deferred request left in the queue", "id", id, "err", err)
			return nil
		}
		inj, _, err := prepareInjection(&e.Request)
		if err != nil {
			a.log.Error("invalid deferred request dropped", "id", id, "err", err)
			return q.Remove(context.Background(), id)
		}
		inj.peer = e.Peer
		inj.limit = 2 * a.cfg.MaxBodyBytes
		todo = append(todo, pending{id, inj})
		return nil
	})
	if err != nil {
		return fmt.Errorf("httpapi: resume deferred injections: %w", err)
	}
	if len(todo) > 0 {
		a.log.Info("resuming deferred injections", "requests", len(todo))
	}
	for _, p := range todo {
		a.bg.Go(func() { a.generateDeferred(p.id, p.inj) })
	}
	return nil
}
