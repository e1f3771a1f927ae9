package egress

// Cache purging for memory pressure (mta's memory monitor calls these
// through Server.RegisterCache, as KumoMTA purges its LRU caches when
// memory runs short).

// PurgeCache drops every cached DNS answer and returns how many there
// were. Lookups in flight are not affected; later ones ask the servers
// again.
func (r *Resolver) PurgeCache() int {
	if r.cache == nil {
		return 0
	}
	return r.cache.purge()
}

func (c *dnsCache) purge() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.order.Len()
	clear(c.items)
	c.order.Init()
	return n
}

// PurgeCache drops the cached MTA-STS results that protect nothing: failed
// fetches and policies in mode "none". Policies in mode enforce or
// testing are kept: RFC 8461 section 5.1 relies on the cached policy to
// resist an attacker who removes the TXT record or blocks the policy
// fetch, and an attacker able to fill our memory must not also be able
// to switch MTA-STS off. They are few and small (at most
// MTASTSOptions.CacheSize). It returns the number of entries dropped.
func (m *MTASTS) PurgeCache() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, e := range m.cache {
		if e.policy == nil || e.policy.Mode == MTASTSNone {
			delete(m.cache, k)
			n++
		}
	}
	return n
}
