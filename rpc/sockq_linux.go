package rpc

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketQueue returns a function reporting how many bytes sit in the send
// queue of the socket under nc's wrappers (SIOCOUTQ: for TCP, written and
// not yet acknowledged by the peer's kernel; for a unix socket, not yet
// read by the peer, counted with the kernel's own overhead), or nil if nc
// is no socket (net.Pipe, an SSH channel). One ioctl per call: the
// watchdog calls it once a tick, never on the write path.
func socketQueue(nc net.Conn) func() (int64, bool) {
	sc, ok := innermost(nc).(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() (int64, bool) {
		var n int
		var ierr error
		if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ierr != nil {
			return 0, false
		}
		return int64(n), true
	}
}
