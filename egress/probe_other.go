//go:build !unix

package egress

import "net"

// rawPending cannot peek at a socket on this platform; it reports nothing
// pending, so only input already buffered is noticed on idle connections.
func rawPending(net.Conn) (bool, error) { return false, nil }
