//go:build !unix

package badgerspool

import (
	"errors"

	"github.com/mtakit/mtakit/spool"
)

// dirSpace cannot tell without statfs.
func dirSpace(string) (spool.Space, error) {
	return spool.Space{}, errors.New("badgerspool: free space is not known on this system")
}
