package stream

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// NetConn returns the stream as a net.Conn, to tunnel a socket (an NBD
// connection, a console, a port forward) through the virtrpc connection.
// The stream should be Duplex. Reads and writes may come from any number of
// goroutines; deadlines return os.ErrDeadlineExceeded. Its Close behaves
// like a socket's: it finishes this side's direction and stops reading,
// without waiting for the peer. The peer reads io.EOF once it has read
// everything; data it sends after Close is dropped (its Close then reports
// it in native mode). Use the Stream's own Close to learn the outcome.
func (s *Stream) NetConn() net.Conn { return &netConn{st: s} }

type netConn struct {
	st       *Stream
	rmu, wmu sync.Mutex
}

func (c *netConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.st.c.Read(p)
}

func (c *netConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.st.c.Write(p)
}

func (c *netConn) Close() error {
	c.st.c.CloseNet()
	return nil
}

func (c *netConn) LocalAddr() net.Addr  { return Addr{Serial: c.st.c.Header().Serial} }
func (c *netConn) RemoteAddr() net.Addr { return Addr{Serial: c.st.c.Header().Serial, Remote: true} }

func (c *netConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *netConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *netConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// Addr is the address of a stream used as a net.Conn: the serial of the
// call that opened it.
type Addr struct {
	Serial uint32
	Remote bool // the peer's end
}

// Network returns "virtrpc-stream".
func (Addr) Network() string { return "virtrpc-stream" }

func (a Addr) String() string {
	if a.Remote {
		return fmt.Sprintf("peer:stream/%d", a.Serial)
	}
	return fmt.Sprintf("stream/%d", a.Serial)
}
