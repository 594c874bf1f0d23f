package transport_test

import (
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// sockopts are the settings the tests read back from a socket.
type sockopts struct {
	NoDelay, NotSentLowat, KeepAlive int
}

func readSockopts(t *testing.T, c net.Conn) sockopts {
	t.Helper()
	return sockopts{
		NoDelay:      getsockopt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY),
		NotSentLowat: getsockopt(t, c, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT),
		KeepAlive:    getsockopt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE),
	}
}

// getsockopt reads an integer option from the socket under c, unwrapping
// *tls.Conn and similar wrappers.
func getsockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	require.True(t, ok, "%T has no socket", c)
	rc, err := sc.SyscallConn()
	require.NoError(t, err)
	var v int
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), level, opt)
	}))
	require.NoError(t, serr)
	return v
}
