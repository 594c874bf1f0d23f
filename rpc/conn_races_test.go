package rpc_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
)

// A handler that Replies early and goes on running frees its
// MaxConcurrentCalls slot with the reply, as the client frees its slot of
// the announced MaxCalls when the reply arrives: the client's next call,
// within the limit the server announced, is served (it was once refused).
func TestAnEarlyReplyFreesTheCallsSlot(t *testing.T) {
	mux := rpc.NewMux()
	release := make(chan struct{})
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		if err := req.Reply(nil); err != nil {
			return nil, err
		}
		select { // e.g. moves the stream it opened
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	c, srv := pair(t, nil, &rpc.Options{Handlers: mux, MaxConcurrentCalls: 1})
	defer close(release)
	require.Equal(t, rpc.ModeNative, c.Mode())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Call(ctx, echoProc, nil)
	require.NoError(t, err)
	_, err = c.Call(ctx, echoProc, nil)
	require.NoError(t, err, "second call, within the server's announced MaxCalls=1, refused; server serving=%d", srv.Stats().CallsServing)
}

// The client goes native on its read loop as it takes the HELLO reply, so a
// server that calls as soon as it is native is served. (Going native on the
// HELLO caller's goroutine once let the read loop take that CALL while
// still in compat mode, and close the connection with a protocol error.)
func TestServerCallRightAfterHelloIsNative(t *testing.T) {
	mux := rpc.NewMux()
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return req.Payload, nil })
	for i := 0; i < 50; i++ {
		cc, sc := tlsPair(t, testPKI(t))
		srv := rpc.Server(sc, nil)
		res := make(chan error, 1)
		go func() {
			select {
			case <-srv.Negotiated():
			case <-srv.Done():
				res <- srv.Err()
				return
			}
			_, err := srv.Call(context.Background(), echoProc, []byte("x"))
			res <- err
		}()
		c, err := rpc.Client(context.Background(), cc, &rpc.Options{Handlers: mux})
		require.NoError(t, err)
		err = <-res
		cerr := c.Err()
		_ = c.Close()
		_ = srv.Close()
		require.NoError(t, err, "iteration %d: server's first call failed; client closed with %v", i, cerr)
	}
}

// Call's ctx is honoured while the call queue is over its bound (the peer
// reads nothing): "If ctx ends first, Call returns at once".
func TestCallHonoursCtxBehindAFullQueue(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	a, b := tcpPair(t)
	defer a.Close() // peer: never reads
	c, err := rpc.Client(context.Background(), b, &rpc.Options{Negotiation: rpc.CompatOnly})
	require.NoError(t, err)
	big := make([]byte, 1<<20)
	for i := 0; i < 24; i++ { // > 8 MiB queued plus socket buffers
		go func() { _, _ = c.Call(context.Background(), echoProc, big) }()
	}
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := c.Call(ctx, echoProc, nil); done <- err }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(2 * time.Second):
		_ = c.Close()
		<-done
		t.Fatal("Call with a 100 ms ctx still blocked after 2 s behind a full call queue")
	}
	_ = c.Close()
	verifyNoLeak(t, ignore)
}

// Over transport.ListenTLS (handshake on first Read/Write) a client that
// connects and says nothing: Serve bounds the handshake, closes the
// connection at its end without ever serving it, and still returns with its
// ctx; a client that handshakes meanwhile is served.
func TestSilentTLSClientDoesNotHangServe(t *testing.T) {
	ln, err := transport.ListenTLS(context.Background(), "tcp", "127.0.0.1:0",
		&transport.TLSOptions{Config: testPKI(t).ServerConfig()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *rpc.Conn, 2)
	served := make(chan error, 1)
	go func() {
		served <- rpc.Serve(ctx, ln, &rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1, HandshakeTimeout: 200 * time.Millisecond},
			func(c *rpc.Conn) { got <- c })
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()

	tc, err := transport.DialTLS(context.Background(), "tcp", ln.Addr().String(), &transport.TLSOptions{Config: testPKI(t).ClientConfig()})
	require.NoError(t, err)
	c, err := rpc.Client(context.Background(), tc, nil)
	require.NoError(t, err, "a silent client does not hold up the next")
	defer c.Close()
	_, err = c.Call(context.Background(), echoProc, nil)
	require.NoError(t, err)
	sc := <-got
	assert.True(t, sc.NetConn().(*tls.Conn).ConnectionState().HandshakeComplete, "onConn gets a connection past its handshake")

	require.NoError(t, raw.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = raw.Read(make([]byte, 1))
	require.Error(t, err)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the silent connection is closed after the 200 ms handshake bound, not kept")
	assert.Len(t, got, 0, "the silent client is never served")

	cancel()
	select {
	case err := <-served:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return within 15 s of its ctx's end")
	}
}
