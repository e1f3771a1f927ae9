//go:build !linux

package badgerspool

import "os"

// allocate gives f size bytes of real blocks by writing zeros.
func allocate(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			return err
		}
	}
	return nil
}
