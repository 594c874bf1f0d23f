package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
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
// on a peer that reads nothing. Close closes the socket, which fails that
// write, and Close must then return, with the caller unblocked, instead of
// leaving the connection's writer waiting for a hand-back that never comes.
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
	case <-time.After(30 * time.Second):
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
	opened, gaveUp := make(chan struct{}), make(chan struct{})
	mux.Handle(slowReply, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, nil)
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
		close(opened)
		<-gaveUp // the reply comes after the caller gave up
		return nil, nil
	})
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	require.Equal(t, rpc.ModeNative, c.Mode())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-opened; cancel() }() // give up once the server's side is open
	_, _, err := c.OpenStream(ctx, slowReply, nil, stream.Download, nil)
	require.ErrorIs(t, err, context.Canceled)
	close(gaveUp)
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

// flakyListener fails its first Accepts as a process out of file
// descriptors would.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// Serve rides out Accept errors that pass (EMFILE here) instead of closing
// every connection it serves, and still ends when its ctx does.
func TestServeRetriesTransientAcceptErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- rpc.Serve(ctx, &flakyListener{Listener: ln, fails: 3}, &rpc.Options{Handlers: echoMux()}, nil)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	c, err := rpc.Client(context.Background(), nc, nil)
	require.NoError(t, err, "a client connecting while Accept fails is served once it passes")
	defer c.Close()
	got, err := c.Call(context.Background(), echoProc, []byte("served"))
	require.NoError(t, err)
	assert.Equal(t, "served", string(got))

	cancel()
	select {
	case err := <-served:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not end with its ctx")
	}
	<-c.Done()
}

// A handler that ends its goroutine with runtime.Goexit (t.FailNow in a
// test handler, say) still answers its caller and frees its slot.
func TestHandlerGoexitStillReplies(t *testing.T) {
	exits := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 78}
	mux := echoMux()
	mux.Handle(exits, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		runtime.Goexit()
		return nil, nil
	})
	c, srv := pair(t, nil, &rpc.Options{Handlers: mux, MaxConcurrentCalls: 1})
	for range 3 { // with the slot leaked, the second call would wait forever
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Call(ctx, exits, nil)
		cancel()
		var re *rpc.Error
		require.ErrorAs(t, err, &re)
		assert.Contains(t, re.Text(), "exited without returning")
	}
	assert.Zero(t, srv.Stats().CallsServing)
}

// A handler that closes its stream at once (say its sink would not open)
// while the client uploads: the upload fails loudly on the client, in both
// modes, whichever of the close and the data comes first; it never ends
// with nil from Write and Close (silent loss) nor hangs on a full window.
func TestEarlyCloseByTheReceiverFailsTheUpload(t *testing.T) {
	closesAtOnce := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 79}
	mux := echoMux()
	mux.Handle(closesAtOnce, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() { _ = st.Close() }()
		return nil, nil
	})
	for _, mode := range []struct {
		name string
		opts *rpc.Options
	}{{"native", nil}, {"compat", &rpc.Options{Negotiation: rpc.CompatOnly}}} {
		for _, size := range []int{64 << 10, 20 << 20} { // within the first window, and far past it
			t.Run(fmt.Sprintf("%s/%d", mode.name, size), func(t *testing.T) {
				c, _ := pair(t, mode.opts, &rpc.Options{Handlers: mux})
				st, _, err := c.OpenStream(context.Background(), closesAtOnce, nil, stream.Upload, nil)
				require.NoError(t, err)
				done := make(chan error, 1)
				go func() {
					_, werr := st.Write(make([]byte, size))
					cerr := st.Close()
					done <- errors.Join(werr, cerr)
				}()
				select {
				case err := <-done:
					require.Error(t, err, "the upload reported success, but nobody read it")
				case <-time.After(30 * time.Second):
					_ = st.CloseWithError(nil)
					t.Fatal("the upload hangs after the receiver closed")
				}
				got, err := c.Call(context.Background(), echoProc, []byte("next"))
				require.NoError(t, err, "the connection carries on")
				assert.Equal(t, "next", string(got))
			})
		}
	}
}

// A side that only receives cannot write: Write fails at once with
// ErrDirection instead of queueing data nobody reads.
func TestWriteOnADownloadFails(t *testing.T) {
	c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
	st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(0, 1), stream.Download, nil) // an empty download
	require.NoError(t, err)
	_, err = st.Write([]byte("wrong way"))
	require.ErrorIs(t, err, stream.ErrDirection)
	n, err := st.Read(make([]byte, 1))
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF)
	require.NoError(t, st.Close(), "the empty download was read whole")
}

// emfileListener fails every Accept with EMFILE until it is closed.
type emfileListener struct {
	net.Listener
	closed chan struct{}
	once   sync.Once
}

func (l *emfileListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
}

func (l *emfileListener) Close() error { l.once.Do(func() { close(l.closed) }); return nil }

// Serve cancelled while it backs off from Accept errors returns ctx's error.
func TestServeCancelledDuringAcceptBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- rpc.Serve(ctx, &emfileListener{closed: make(chan struct{})}, nil, nil) }()
	time.Sleep(20 * time.Millisecond) // into the backoff
	cancel()
	select {
	case err := <-res:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// A stream aborted with a long error (libvirt allows 4 MiB of message) fails
// that stream with the error, not the whole connection.
func TestStreamAbortWithALongErrorKeepsTheConnection(t *testing.T) {
	longAbort := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 80}
	mux := echoMux()
	text := strings.Repeat("x", 1100<<10)
	mux.Handle(longAbort, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		if err := req.Reply(nil); err != nil {
			return nil, err
		}
		return nil, st.CloseWithError(errors.New(text))
	})
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	st, _, err := c.OpenStream(context.Background(), longAbort, nil, stream.Download, nil)
	require.NoError(t, err)
	_, err = io.ReadAll(st)
	var re *rpc.Error
	require.ErrorAs(t, err, &re, "the stream fails with the handler's error")
	assert.Equal(t, text, re.Text())
	require.NoError(t, c.Err(), "and the connection carries on")
	_, err = c.Call(context.Background(), echoProc, nil)
	require.NoError(t, err)
}
