package mta

import "time"

// Observer receives measurements that log records do not carry, for
// metrics (see package mta/metrics). Its methods are called on the
// message path and must return quickly.
type Observer interface {
	// Spooled reports that the n messages of one reception (an SMTP
	// transaction or an Inject call) became durable in both spools, d
	// after their stores began.
	Spooled(d time.Duration, n int)
}

// SetObserver installs o, replacing any earlier one; nil removes it.
func (s *Server) SetObserver(o Observer) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&o)
}

func (s *Server) observeSpooled(d time.Duration, n int) {
	if o := s.observer.Load(); o != nil {
		(*o).Spooled(d, n)
	}
}
