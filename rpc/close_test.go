package rpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
)

// writeSignalConn reports when a Write has started.
type writeSignalConn struct {
	net.Conn
	writing chan struct{}
}

func (c *writeSignalConn) Write(p []byte) (int, error) {
	select {
	case c.writing <- struct{}{}:
	default:
	}
	return c.Conn.Write(p)
}

// TestCloseWhileAWriteIsStuck: Close while a caller's own write is blocked
// on a peer that reads nothing. Close's flush deadline fails that write, and
// Close must then return, with the caller unblocked, instead of leaving the
// connection's writer waiting for a hand-back that never comes.
func TestCloseWhileAWriteIsStuck(t *testing.T) {
	a, b := net.Pipe() // nobody reads b: a's first Write blocks
	defer b.Close()
	nc := &writeSignalConn{Conn: a, writing: make(chan struct{}, 1)}
	c, err := rpc.Client(context.Background(), nc, &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: -1})
	require.NoError(t, err)

	callErr := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), echoProc, []byte("stuck"))
		callErr <- err
	}()
	<-nc.writing // the calling goroutine holds the socket, blocked in Write

	closed := make(chan struct{})
	go func() {
		_ = c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // Close's flush gives up after 1 s
		t.Fatal("Close did not return after its flush deadline failed the stuck write")
	}
	err = <-callErr
	require.ErrorIs(t, err, net.ErrClosed)
	var ce *rpc.ClosedError
	assert.ErrorAs(t, err, &ce)
}
