package badgerspool

import (
	"os"
	"syscall"
)

// allocate gives f size bytes of real blocks at once (fallocate).
func allocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}
