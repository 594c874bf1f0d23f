package rpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// stalledPair returns a connection whose peer reads nothing: both socket
// buffers are shrunk, so a write of a few hundred KiB blocks for good. The
// peer end is returned for the test to keep open (and never read).
func stalledPair(t *testing.T) (local, peer net.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	require.NoError(t, a.(*net.TCPConn).SetWriteBuffer(4<<10))
	require.NoError(t, b.(*net.TCPConn).SetReadBuffer(4<<10))
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// ctxBound is how long after its ctx ended a blocking call may take to
// return: the promise is a few ms; this leaves room for a loaded CI machine.
const ctxBound = 2 * time.Second

// returnsWithCtx runs op with a ctx that ends after 100 ms and checks that
// op returns ctx's error, and its goroutine ends, within ctxBound of that.
func returnsWithCtx(t *testing.T, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- op(ctx) }()
	<-ctx.Done()
	select {
	case err := <-res:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(ctxBound):
		t.Fatalf("still blocked %v after its ctx ended", ctxBound)
	}
}

// Every blocking call returns with its ctx toward a peer that reads nothing,
// also when the calling goroutine would write the socket itself (an idle
// connection: the write token is free).
func TestBlockingCallsReturnWithTheirCtx(t *testing.T) {
	big := make([]byte, 4<<20) // far more than the shrunk socket buffers hold
	type bigArgs struct {
		Data []byte `xdr:"max=8388608"`
	}
	clientOps := map[string]func(c *rpc.Conn) func(ctx context.Context) error{
		"Call": func(c *rpc.Conn) func(ctx context.Context) error {
			return func(ctx context.Context) error { _, err := c.Call(ctx, echoProc, big); return err }
		},
		"CallXDR": func(c *rpc.Conn) func(ctx context.Context) error {
			return func(ctx context.Context) error { return c.CallXDR(ctx, echoProc, &bigArgs{Data: big}, nil) }
		},
		"OpenStream": func(c *rpc.Conn) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				_, _, err := c.OpenStream(ctx, uploadProc, big, stream.Upload, nil)
				return err
			}
		},
		"Shutdown": func(c *rpc.Conn) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				go func() { _, _ = c.Call(context.Background(), echoProc, big) }() // never answered
				require.Eventually(t, func() bool { return c.Stats().CallsPending > 0 }, 10*time.Second, time.Millisecond)
				return c.Shutdown(ctx)
			}
		},
	}
	for name, op := range clientOps {
		t.Run(name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			a, _ := stalledPair(t)
			c, err := rpc.Client(context.Background(), a, &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: -1})
			require.NoError(t, err)
			returnsWithCtx(t, op(c))
			require.NoError(t, c.Close())
			verifyNoLeak(t, ignore)
		})
	}
	// Send returns once its message is queued; with the queue full it waits
	// for room, and that wait honours ctx too.
	t.Run("Send", func(t *testing.T) {
		ignore := goleak.IgnoreCurrent()
		_, b := stalledPair(t)
		srv := rpc.Server(b, &rpc.Options{KeepaliveInterval: -1}) // compat: the server may send
		returnsWithCtx(t, func(ctx context.Context) error {
			for {
				if err := srv.Send(ctx, echoProc, big); err != nil {
					return err
				}
			}
		})
		require.NoError(t, srv.Close())
		verifyNoLeak(t, ignore)
	})
}

// A call whose ctx ended while its frame was being written leaves the
// connection usable: the frame is written whole by the connection's writer,
// and the late reply is dropped.
func TestCallCancelledMidWriteKeepsTheConnection(t *testing.T) {
	c, _ := pair(t, nil, &rpc.Options{Handlers: echoMux()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Microsecond)
		_, _ = c.Call(ctx, echoProc, make([]byte, 1<<20))
		cancel()
	}
	_, err := c.Call(ctx, echoProc, nil)
	require.ErrorIs(t, err, context.Canceled)
	got, err := c.Call(context.Background(), echoProc, []byte("intact"))
	require.NoError(t, err)
	assert.Equal(t, "intact", string(got))
}
