//go:build !linux

package adminsock

import "net"

// peerAllowed accepts every connection: where the peer's uid is not read
// (SO_PEERCRED is Linux's), the socket file's mode 0600 in the 0700 data
// directory is the guard.
func peerAllowed(net.Conn) error { return nil }
