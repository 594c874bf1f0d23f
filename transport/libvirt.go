package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// libvirtAckByte is what a libvirt server sends after the TLS handshake once
// it has accepted the client's certificate (and address).
const libvirtAckByte = 0x01

// ErrLibvirtRefused is matched by the error [DialTLS] returns when, with
// LibvirtAck, the server answers the handshake with anything but the
// acknowledgement byte: another byte, a TLS alert (typically about the
// client certificate), or end of stream.
var ErrLibvirtRefused = errors.New("libvirt server refused the TLS session")

// readLibvirtAck reads and checks the acknowledgement byte under ctx.
func readLibvirtAck(ctx context.Context, tc *tls.Conn) error {
	var b [1]byte
	err := withContext(ctx, tc.NetConn(), func() error {
		_, err := io.ReadFull(tc, b[:])
		return err
	})
	var opErr *net.OpError
	switch {
	case err == nil && b[0] == libvirtAckByte:
		return nil
	case err == nil:
		return fmt.Errorf("transport: %w: acknowledgement byte is 0x%02x, want 0x%02x (client certificate or address not accepted)",
			ErrLibvirtRefused, b[0], libvirtAckByte)
	case ctx.Err() != nil:
		return fmt.Errorf("transport: waiting for libvirt TLS acknowledgement: %w", ctxError(ctx, err))
	case errors.Is(err, io.EOF):
		return fmt.Errorf("transport: %w: connection closed before the acknowledgement byte: %w", ErrLibvirtRefused, err)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return fmt.Errorf("transport: %w: %w", ErrLibvirtRefused, err)
	default:
		return fmt.Errorf("transport: waiting for libvirt TLS acknowledgement: %w", err)
	}
}

// AcceptLibvirtTLS is the server side of libvirt's TLS session setup for a
// connection from tls.Server or tls.NewListener: it completes the handshake
// (which verifies the client certificate as c's config demands) and then
// sends the acknowledgement byte libvirt clients wait for. Call it exactly
// once per connection, before any other I/O; connections from [ListenTLS]
// with LibvirtAck do this for you. If ctx ends first, c is closed and the
// error matches ctx's error.
func AcceptLibvirtTLS(ctx context.Context, c *tls.Conn) error {
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("transport: TLS handshake with %s: %w", c.RemoteAddr(), ctxError(ctx, err))
	}
	err := withContext(ctx, c.NetConn(), func() error {
		_, err := c.Write([]byte{libvirtAckByte})
		return err
	})
	if err != nil {
		return fmt.Errorf("transport: sending libvirt TLS acknowledgement to %s: %w", c.RemoteAddr(), err)
	}
	return nil
}

// LibvirtServerConn is a server-side TLS connection that acknowledges the
// session the way libvirt does. [ListenTLS] returns these when
// TLSOptions.LibvirtAck is set; the zero value is not usable.
//
// Its handshake and acknowledgement run exactly once: in [Handshake] /
// HandshakeContext, or else on the first Read or Write, which are then
// bounded by the connection's deadlines like any I/O. Concurrent callers
// wait for that one run and share its outcome; a failed handshake makes
// every later Read, Write and HandshakeContext return the same error.
type LibvirtServerConn struct {
	conn *tls.Conn

	mu    sync.Mutex  // serializes the handshake
	done  atomic.Bool // set once hsErr is final
	hsErr error
}

// HandshakeContext runs the handshake and sends the acknowledgement, if not
// done yet, bounded by ctx. If ctx ends first, the connection is closed.
func (c *LibvirtServerConn) HandshakeContext(ctx context.Context) error {
	if c.done.Load() {
		return c.hsErr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done.Load() {
		c.hsErr = AcceptLibvirtTLS(ctx, c.conn)
		c.done.Store(true)
	}
	return c.hsErr
}

// Read reads decrypted data, handshaking first if needed.
func (c *LibvirtServerConn) Read(b []byte) (int, error) {
	if err := c.HandshakeContext(context.Background()); err != nil {
		return 0, err
	}
	return c.conn.Read(b)
}

// Write writes data, handshaking first if needed.
func (c *LibvirtServerConn) Write(b []byte) (int, error) {
	if err := c.HandshakeContext(context.Background()); err != nil {
		return 0, err
	}
	return c.conn.Write(b)
}

// Close closes the connection, sending a TLS close_notify if the handshake
// has completed. It may be called concurrently with an ongoing handshake to
// abort it.
func (c *LibvirtServerConn) Close() error { return c.conn.Close() }

// CloseWrite shuts down the writing side; see [tls.Conn.CloseWrite].
func (c *LibvirtServerConn) CloseWrite() error { return c.conn.CloseWrite() }

// LocalAddr returns the local network address.
func (c *LibvirtServerConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the client's network address.
func (c *LibvirtServerConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines, which also bound a
// handshake run by Read or Write.
func (c *LibvirtServerConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *LibvirtServerConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *LibvirtServerConn) SetWriteDeadline(t time.Time) error {
	return c.conn.SetWriteDeadline(t)
}

// ConnectionState returns the TLS state, including the verified client
// certificate chain once the handshake is done.
func (c *LibvirtServerConn) ConnectionState() tls.ConnectionState {
	return c.conn.ConnectionState()
}

// NetConn returns the connection under TLS, for [Tune] and the like. Reading
// or writing it directly corrupts the TLS stream.
func (c *LibvirtServerConn) NetConn() net.Conn { return c.conn.NetConn() }
