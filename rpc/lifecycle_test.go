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

// TestAbandonedOpenStreamAbortsThePeersSide: OpenStream's ctx ends after
// the peer's handler opened its side of the stream but before the reply
// came. When the reply comes, the peer's side is aborted with an error that
// says so, instead of waiting for credit until the connection closes.
func TestAbandonedOpenStreamAbortsThePeersSide(t *testing.T) {
	slowReply := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 77}
	mux := echoMux()
	writeDone := make(chan error, 1)
	mux.Handle(slowReply, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(nil)
		if err != nil {
			return nil, err
		}
		go func() {
			_, err := st.Write(make([]byte, 8<<20)) // more than the initial window
			if err == nil {
				err = st.Close()
			}
			writeDone <- err
		}()
		time.Sleep(300 * time.Millisecond) // the reply comes after the caller gave up
		return nil, nil
	})
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	require.Equal(t, rpc.ModeNative, c.Mode())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := c.OpenStream(ctx, slowReply, nil, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case err := <-writeDone:
		var re *rpc.Error
		require.ErrorAs(t, err, &re, "the server's Write ends with the client's abort")
		assert.Contains(t, re.Text(), "gave up")
	case <-time.After(30 * time.Second):
		t.Fatal("the server's side of the stream still waits after the client gave up on it")
	}
	require.Eventually(t, func() bool { return c.Stats().StreamsOpen == 0 }, 10*time.Second, time.Millisecond)
	got, err := c.Call(context.Background(), echoProc, []byte("still fine"))
	require.NoError(t, err, "the connection carries on")
	assert.Equal(t, "still fine", string(got))
}
