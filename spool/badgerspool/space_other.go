//go:build !unix

package badgerspool

import (
	"errors"

	"github.com/mtakit/mtakit/spool"
)

var errNoStatfs = errors.New("badgerspool: free space is not known on this system")

// Space implements spool.SpaceReporter; without statfs it cannot tell.
func (b *Spool) Space() (spool.Space, error) { return spool.Space{}, errNoStatfs }

func freeBytes(string) (uint64, error) { return 0, errNoStatfs }
