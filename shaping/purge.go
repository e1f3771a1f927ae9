package shaping

// PurgeCache drops the resolved path configurations and the provider
// matches of MX lookups, which are recomputed on the next lookup, and
// returns how many entries there were. mta's memory monitor calls it
// when memory runs short (as KumoMTA purges its LRU caches). Automation
// state (active actions) is kept: it is not a cache.
func (s *Shaping) PurgeCache() int {
	s.cacheMu.Lock()
	n := len(s.cache)
	clear(s.cache)
	s.cacheMu.Unlock()
	s.mxMu.Lock()
	n += len(s.mxCache)
	clear(s.mxCache)
	s.mxMu.Unlock()
	return n
}
