//go:build unix

package badgerspool

import (
	"fmt"
	"syscall"

	"github.com/mtakit/mtakit/spool"
)

// Space implements spool.SpaceReporter for the spool's directory.
func (b *Spool) Space() (spool.Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.e.dir, &st); err != nil {
		return spool.Space{}, fmt.Errorf("badgerspool: statfs %s: %w", b.e.dir, err)
	}
	bs := uint64(st.Bsize)
	return spool.Space{
		FreeBytes:   uint64(st.Bavail) * bs,
		TotalBytes:  uint64(st.Blocks) * bs,
		FreeInodes:  uint64(st.Ffree),
		TotalInodes: uint64(st.Files),
	}, nil
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
