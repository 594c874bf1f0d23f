package rpc_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var closeProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 90}

// closedWithin fails the test unless done is closed within a generous bound.
func closedWithin(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// Close returns when called from a call handler, a message handler or a
// stream's goroutine of the connection it closes, and nothing of either
// side keeps running once the handler returned.
func TestCloseFromInsideTheConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup registers what closes the server's connection on mux and
		// returns what the client does to set it off.
		setup func(mux *rpc.Mux, closed chan struct{}) func(c *rpc.Conn)
		// mayReset: the client is still sending when the server closes
		// (a download's data makes it send a bandwidth probe and credit).
		// Close is abortive by its doc (what is queued is dropped, nothing
		// is drained): bytes that reach a closed socket, or sit unread in
		// it, make the kernel answer with a reset instead of a FIN
		// (RFC 1122 4.2.2.13), and the client's read, or its write, fails
		// with the reset before it sees the end of the stream. Either way
		// the peer closed the connection; a graceful end is Shutdown's.
		mayReset bool
	}{
		{"call handler", func(mux *rpc.Mux, closed chan struct{}) func(c *rpc.Conn) {
			mux.Handle(closeProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
				_ = req.Conn().Close()
				close(closed)
				return nil, nil
			})
			return func(c *rpc.Conn) {
				_, err := c.Call(context.Background(), closeProc, nil)
				require.ErrorIs(t, err, net.ErrClosed)
			}
		}, false},
		{"message handler", func(mux *rpc.Mux, closed chan struct{}) func(c *rpc.Conn) {
			mux.HandleMessage(closeProc, func(ctx context.Context, msg *rpc.Message) {
				_ = msg.Conn.Close()
				close(closed)
			})
			return func(c *rpc.Conn) { require.NoError(t, c.Send(context.Background(), closeProc, nil)) }
		}, false},
		{"stream goroutine", func(mux *rpc.Mux, closed chan struct{}) func(c *rpc.Conn) {
			mux.Handle(closeProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
				st, err := req.Stream(stream.Download, nil)
				if err != nil {
					return nil, err
				}
				go func() {
					_, _ = st.Write([]byte("some data"))
					_ = req.Conn().Close()
					close(closed)
				}()
				return nil, nil
			})
			return func(c *rpc.Conn) {
				st, _, err := c.OpenStream(context.Background(), closeProc, nil, stream.Download, nil)
				if err != nil { // the close dropped the queued reply
					require.ErrorIs(t, err, net.ErrClosed)
					return
				}
				_, err = io.ReadAll(st)
				require.Error(t, err, "the download was cut short")
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			closed := make(chan struct{})
			mux := rpc.NewMux()
			trigger := tc.setup(mux, closed)
			cc, sc := tlsPair(t, testPKI(t))
			srv := rpc.Server(sc, &rpc.Options{Handlers: mux})
			c, err := rpc.Client(context.Background(), cc, nil)
			require.NoError(t, err)
			trigger(c)
			closedWithin(t, closed, "Close from inside the connection")
			closedWithin(t, srv.Done(), "the server's connection")
			closedWithin(t, c.Done(), "the client's connection")
			require.ErrorIs(t, c.Err(), net.ErrClosed)
			if tc.mayReset && (errors.Is(c.Err(), syscall.ECONNRESET) || errors.Is(c.Err(), syscall.EPIPE)) {
				t.Log("the server's close reset the connection:", c.Err())
			} else {
				require.ErrorIs(t, c.Err(), rpc.ErrPeerClosed)
			}
			require.NoError(t, c.Close())
			verifyNoLeak(t, ignore)
		})
	}
}

// Close is prompt even while the writer is blocked on a peer that reads
// nothing (a TLS close_notify would block too): it drops what is queued.
func TestCloseIsPromptTowardAPeerThatReadsNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	a, _ := stalledPair(t)
	c, err := rpc.Client(context.Background(), a, &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: -1})
	require.NoError(t, err)
	go func() { _, _ = c.Call(context.Background(), echoProc, make([]byte, 4<<20)) }()
	require.Eventually(t, func() bool { return c.Stats().BytesSent > 0 }, 10*time.Second, time.Millisecond)
	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	closedWithin(t, closed, "Close")
	verifyNoLeak(t, ignore)
}

// Shutdown waits for the calls in flight and their replies, refuses new
// calls from both sides meanwhile, and then closes the connection.
func TestShutdownDrainsCallsInFlight(t *testing.T) {
	slow := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 91}
	mux := echoMux()
	started, release := make(chan struct{}), make(chan struct{})
	mux.Handle(slow, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		close(started)
		<-release
		return []byte("done"), nil
	})
	c, srv := pair(t, nil, &rpc.Options{Handlers: mux})
	res := make(chan error, 1)
	go func() {
		got, err := c.Call(context.Background(), slow, nil)
		if err == nil && string(got) != "done" {
			err = errors.New("wrong reply " + string(got))
		}
		res <- err
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	require.Eventually(t, func() bool {
		_, err := c.Call(context.Background(), echoProc, nil)
		var re *rpc.Error
		return errors.As(err, &re) && re.Text() == "connection shutting down"
	}, 10*time.Second, time.Millisecond, "new calls are refused while draining")
	_, err := srv.Call(context.Background(), echoProc, nil)
	require.ErrorIs(t, err, rpc.ErrShutdown)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a call in flight", err)
	default:
	}
	close(release)
	require.NoError(t, <-res, "the call in flight is answered")
	select {
	case err := <-shut:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once drained")
	}
	closedWithin(t, c.Done(), "the client's connection")
	assert.ErrorIs(t, c.Err(), rpc.ErrPeerClosed)
}

// Shutdown waits for an open stream to end before it closes: an upload
// started before it completes, verified by the receiver.
func TestShutdownWaitsForOpenStreams(t *testing.T) {
	data := make([]byte, 4<<20)
	_, _ = (&pattern{}).Read(data)
	sum := sha256.Sum256(data)
	c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
	st, _, err := c.OpenStream(context.Background(), verifyUploadProc, sum[:], stream.Upload, nil)
	require.NoError(t, err)
	shut := make(chan error, 1)
	go func() { shut <- c.Shutdown(context.Background()) }()
	_, err = st.Write(data[:1<<20])
	require.NoError(t, err)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a stream open", err)
	case <-time.After(50 * time.Millisecond): // a chance to return too early, not a timing assertion
	}
	_, err = st.Write(data[1<<20:])
	require.NoError(t, err)
	require.NoError(t, st.Close(), "the receiver got it all")
	select {
	case err := <-shut:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once the stream ended")
	}
}

// A stream Write after Done returns the connection's error at once: the
// streams fail before Done is closed (once a Write just after Done could
// return nil and queue data that would never be sent).
func TestStreamWriteAfterDoneFails(t *testing.T) {
	for i := range 50 {
		c, srv := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
		st, _, err := c.OpenStream(context.Background(), verifyUploadProc, digest(1, 1), stream.Upload, nil)
		require.NoError(t, err)
		go func() { _ = srv.Close() }()
		<-c.Done()
		_, err = st.Write([]byte("x"))
		require.Error(t, err, "a Write after Done (run %d)", i)
		var ce *rpc.ClosedError
		require.ErrorAs(t, err, &ce, "the connection's error")
		require.ErrorIs(t, err, net.ErrClosed)
		_ = c.Close()
	}
}
