//go:build unix

package badgerspool

import (
	"fmt"
	"syscall"

	"github.com/mtakit/mtakit/spool"
)

// dirSpace reads the room left on the filesystem holding dir.
func dirSpace(dir string) (spool.Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return spool.Space{}, fmt.Errorf("badgerspool: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return spool.Space{
		FreeBytes:   uint64(st.Bavail) * bs,
		TotalBytes:  uint64(st.Blocks) * bs,
		FreeInodes:  uint64(st.Ffree),
		TotalInodes: uint64(st.Files),
	}, nil
}
