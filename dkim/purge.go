package dkim

// PurgeCache drops the cached signers and the parsed keys of the Data's
// KeyCache, which are built again from the key files on the next
// signature, and returns how many entries there were. mta's memory
// monitor calls it when memory runs short, as KumoMTA purges its DKIM
// signer cache.
func (d *Data) PurgeCache() int {
	d.mu.Lock()
	n := len(d.signers)
	clear(d.signers)
	d.mu.Unlock()
	return n + d.keys.Purge()
}

// Purge drops every cached key and returns how many there were.
func (c *KeyCache) Purge() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.entries)
	clear(c.entries)
	return n
}
