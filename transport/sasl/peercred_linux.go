package sasl

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCred returns the credentials of the process at the other end of a
// unix socket (SO_PEERCRED), or nil.
func peerCred(nc net.Conn) *PeerCred {
	for range 16 { // under wrappers with NetConn (the transport package's)
		if uc, ok := nc.(*net.UnixConn); ok {
			rc, err := uc.SyscallConn()
			if err != nil {
				return nil
			}
			var cred *unix.Ucred
			var serr error
			if err := rc.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || serr != nil {
				return nil
			}
			return &PeerCred{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
		}
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = w.NetConn()
	}
	return nil
}
