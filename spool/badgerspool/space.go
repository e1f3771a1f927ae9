package badgerspool

import "github.com/mtakit/mtakit/spool"

// Space implements spool.SpaceReporter for the spool's directory.
func (b *Spool) Space() (spool.Space, error) { return dirSpace(b.e.dir) }

// freeBytes is the space available to the spool in dir.
func freeBytes(dir string) (uint64, error) {
	sp, err := dirSpace(dir)
	return sp.FreeBytes, err
}
