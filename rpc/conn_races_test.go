package rpc_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

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

// Over transport.ListenTLS (handshake on first Read/Write, as documented)
// a client that connects and says nothing: the keepalive queues its PING
// (a direct write would block on the TLS handshake lock the read loop holds,
// and the keepalive would never time out), and Serve's graceful Close
// force-closes a writer stuck where no deadline reaches.
func TestSilentTLSClientDoesNotHangServe(t *testing.T) {
	ln, err := transport.ListenTLS(context.Background(), "tcp", "127.0.0.1:0",
		&transport.TLSOptions{Config: testPKI(t).ServerConfig()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *rpc.Conn, 1)
	served := make(chan error, 1)
	go func() {
		served <- rpc.Serve(ctx, ln, &rpc.Options{KeepaliveInterval: 20 * time.Millisecond, KeepaliveCount: 2}, func(c *rpc.Conn) { got <- c })
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	sc := <-got
	var failures []string
	select {
	case <-sc.Done():
	case <-time.After(10 * time.Second):
		failures = append(failures, "keepalive (60 ms) did not close the silent connection within 10 s")
	}
	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.Canceled) {
			failures = append(failures, "Serve: "+err.Error())
		}
	case <-time.After(15 * time.Second):
		failures = append(failures, "Serve did not return within 15 s of its ctx's end")
		raw.Close() // unblock it for the rest of the run
		<-served
	}
	require.Empty(t, failures)
}
