package rpc

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketQueues returns functions reporting how many bytes sit in the
// receive queue (SIOCINQ: arrived, not yet read by us) and in the send
// queue (SIOCOUTQ: for TCP, written and not yet acknowledged by the peer's
// kernel; for a unix socket, not yet read by the peer, counted with the
// kernel's own overhead) of the socket under nc's wrappers, or nils if nc
// is no socket (net.Pipe, an SSH channel). One ioctl per call: the
// watchdog calls them at most once a tick, never on the read or write
// path.
func socketQueues(nc net.Conn) (in, out func() (int64, bool)) {
	rc := rawSocket(innermost(nc))
	if rc == nil {
		return nil, nil
	}
	queue := func(req uint) func() (int64, bool) {
		return func() (int64, bool) {
			var n int
			var ierr error
			if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), req) }); err != nil || ierr != nil {
				return 0, false
			}
			return int64(n), true
		}
	}
	return queue(unix.SIOCINQ), queue(unix.SIOCOUTQ)
}

// rawSocket returns the socket of nc (already unwrapped), or nil if nc is
// no socket.
func rawSocket(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// socketAcked returns a function reporting how many bytes the peer's kernel
// has acknowledged on the TCP socket under nc (TCP_INFO's bytes_acked), or
// nil if nc is no TCP socket. keepalive counts what the peer keeps taking
// as its sign of life (sendProgress).
func socketAcked(nc net.Conn) func() (int64, bool) {
	tc, ok := innermost(nc).(*net.TCPConn)
	if !ok {
		return nil
	}
	rc := rawSocket(tc)
	if rc == nil {
		return nil
	}
	return func() (int64, bool) {
		var info *unix.TCPInfo
		var ierr error
		if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
			return 0, false
		}
		return int64(info.Bytes_acked), true
	}
}
