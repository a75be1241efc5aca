package adminsock

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerAllowed accepts a connection from a process of the server's own
// uid only (SO_PEERCRED: the kernel's word, not the client's), and
// returns why not otherwise. The socket's mode 0600 is the first guard;
// this one holds even when the data directory or the socket file was
// opened up by hand, and refuses root too: run the command as bffgate's
// user.
func peerAllowed(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("reading the peer's credentials: %w", cerr)
	}
	if uid := os.Getuid(); int(cred.Uid) != uid {
		return fmt.Errorf("uid %d may not use the admin socket of bffgate running as uid %d: run the command as the user bffgate runs as", cred.Uid, uid)
	}
	return nil
}
