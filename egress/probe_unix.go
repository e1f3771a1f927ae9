//go:build unix

package egress

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// rawPending reports, without blocking, whether input (or end of file) is
// waiting on conn. Connections that do not expose their socket report
// nothing pending.
func rawPending(conn net.Conn) (bool, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var (
		rerr error
		buf  [1]byte
	)
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	})
	if err != nil {
		return false, fmt.Errorf("checking idle connection: %w", err)
	}
	switch {
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
		return false, nil
	case rerr != nil:
		return false, fmt.Errorf("connection lost while idle: %w", rerr)
	}
	// Data, or end of file (0 bytes): the read that follows tells which.
	return true, nil
}
