package mta

import (
	"context"
	"errors"
	"time"

	"github.com/mtakit/mtakit/spool"
)

// reclaimOrphans removes message bodies that no message refers to: a
// crash after reception stored the data and before it stored the meta
// leaves a body that recovery, which reads only the meta spool, never
// sees. It runs in the background after start-up so it does not delay
// recovery, and removes a body only when all of these hold:
//   - its ID was made by an earlier run (spool.ID.FromThisProcess is
//     false), so it is not a reception in progress now;
//   - it is not a live message of this server, nor a shared body that a
//     live message refers to (see body.go);
//   - the meta spool has no entry for it (not even an unreadable one,
//     which recovery leaves in place for a person to look at).
func (s *Server) reclaimOrphans() {
	defer s.workers.Done()
	ctx := s.runCtx
	start := time.Now()
	var candidates []spool.ID
	err := spool.EnumerateIDs(ctx, s.opts.DataSpool, func(id spool.ID) error {
		if !id.FromThisProcess() && !s.sched.isLive(id) && !s.bodies.referenced(id) {
			candidates = append(candidates, id)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("scan data spool for orphaned bodies", "err", err)
		}
		return
	}
	removed := 0
	for _, id := range candidates {
		if s.isStopping() {
			return
		}
		if s.sched.isLive(id) || s.bodies.referenced(id) {
			continue
		}
		_, err := s.opts.MetaSpool.Load(ctx, id)
		if !errors.Is(err, spool.ErrNotFound) {
			continue // has meta, or we cannot tell: keep it
		}
		if err := s.opts.DataSpool.Remove(context.Background(), id); err != nil {
			s.log.Warn("remove orphaned body", "id", id, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		s.log.Info("removed message bodies without metadata (left by a crash during reception)", "count", removed, "duration", time.Since(start))
	}
}
