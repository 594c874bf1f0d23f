package transport

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quickAckConn sets TCP_QUICKACK after every read, so the kernel
// acknowledges at once instead of delaying the ACK (Linux clears the flag
// by itself, hence after every read). See DialSSH for why.
type quickAckConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func withQuickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{TCPConn: tc, rc: rc}
	q.quickAck()
	return q
}

func (c *quickAckConn) quickAck() {
	_ = c.rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	c.quickAck()
	return n, err
}

// NetConn returns the TCP connection.
func (c *quickAckConn) NetConn() net.Conn { return c.TCPConn }
