package rpc_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var (
	echoStreamProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 100} // echoes a duplex stream, hashing what it got
	tunnelProc     = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 101} // hands the server's side to the test
)

// duplexSize: 256 MiB each way, less under -short or the race detector.
func duplexSize() int64 {
	if testing.Short() || raceEnabled {
		return 16 << 20
	}
	return 256 << 20
}

func duplexMux(got chan<- []byte, sides chan<- *stream.Stream) *rpc.Mux {
	mux := echoMux()
	mux.Handle(echoStreamProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Duplex, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			h := sha256.New()
			_, err := io.Copy(st, io.TeeReader(st, h)) // until the client's CloseWrite
			if err == nil {
				err = st.Close()
			}
			if err != nil {
				_ = st.CloseWithError(err)
				got <- nil
				return
			}
			got <- h.Sum(nil)
		}()
		return nil, nil
	})
	mux.Handle(tunnelProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Duplex, nil)
		if err != nil {
			return nil, err
		}
		sides <- st
		return nil, nil
	})
	return mux
}

// A duplex stream carries data both ways at once: the client writes while
// it reads the echo, each way checked by its sha256, in both modes.
func TestDuplexEchoBothWaysAtOnce(t *testing.T) {
	size := duplexSize()
	want := digest(size, 11)
	for _, mode := range []struct {
		name string
		opts *rpc.Options
	}{{"native", nil}, {"compat", &rpc.Options{Negotiation: rpc.CompatOnly}}} {
		t.Run(mode.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			c, _ := pair(t, mode.opts, &rpc.Options{Handlers: duplexMux(got, nil)})
			st, _, err := c.OpenStream(context.Background(), echoStreamProc, nil, stream.Duplex, nil)
			require.NoError(t, err)
			wrote := make(chan error, 1)
			go func() {
				_, err := io.Copy(st, source(size, 11))
				if err == nil {
					err = st.CloseWrite() // half-close: the echo goes on
				}
				wrote <- err
			}()
			h := sha256.New()
			n, err := io.Copy(h, st)
			require.NoError(t, err)
			require.NoError(t, <-wrote)
			assert.Equal(t, size, n)
			assert.Equal(t, want, h.Sum(nil), "what came back")
			require.NoError(t, st.Close())
			assert.Equal(t, want, <-got, "what the server received")
			assert.Equal(t, size, st.BytesSent())
		})
	}
}

// Half-close works from either side: the server finishes its direction
// first and keeps reading.
func TestDuplexServerHalfClose(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts *rpc.Options
	}{{"native", nil}, {"compat", &rpc.Options{Negotiation: rpc.CompatOnly}}} {
		t.Run(mode.name, func(t *testing.T) {
			sides := make(chan *stream.Stream, 1)
			c, _ := pair(t, mode.opts, &rpc.Options{Handlers: duplexMux(nil, sides)})
			st, _, err := c.OpenStream(context.Background(), tunnelProc, nil, stream.Duplex, nil)
			require.NoError(t, err)
			srv := <-sides
			_, err = srv.Write([]byte("banner"))
			require.NoError(t, err)
			require.NoError(t, srv.CloseWrite())
			got, err := io.ReadAll(st)
			require.NoError(t, err)
			assert.Equal(t, "banner", string(got))
			_, err = st.Write([]byte("still talking"))
			require.NoError(t, err, "the client's direction is still open")
			done := make(chan error, 1)
			go func() { done <- st.Close() }()
			got, err = io.ReadAll(srv)
			require.NoError(t, err)
			assert.Equal(t, "still talking", string(got))
			require.NoError(t, srv.Close())
			require.NoError(t, <-done)
		})
	}
}

// The stream as a net.Conn passes x/net's conformance tests (deadlines,
// concurrent use, Close unblocking reads and writes).
func TestDuplexNetConn(t *testing.T) {
	sides := make(chan *stream.Stream, 1)
	c, _ := pair(t, nil, &rpc.Options{Handlers: duplexMux(nil, sides)})
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		st, _, err := c.OpenStream(context.Background(), tunnelProc, nil, stream.Duplex, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		srv := <-sides
		c1, c2 = st.NetConn(), srv.NetConn()
		return c1, c2, func() { _ = c1.Close(); _ = c2.Close() }, nil
	})
	require.Eventually(t, func() bool { return c.Stats().StreamsOpen == 0 }, 10*time.Second, 10*time.Millisecond,
		"streams closed as net.Conns are released once both ends closed")
}

// Deadlines on a stream return os.ErrDeadlineExceeded and leave it usable.
func TestStreamDeadlines(t *testing.T) {
	sides := make(chan *stream.Stream, 1)
	c, _ := pair(t, nil, &rpc.Options{Handlers: duplexMux(nil, sides)})
	st, _, err := c.OpenStream(context.Background(), tunnelProc, nil, stream.Duplex, nil)
	require.NoError(t, err)
	srv := <-sides
	require.NoError(t, st.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = st.Read(make([]byte, 1))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	require.NoError(t, st.SetReadDeadline(time.Time{}))
	_, err = srv.Write([]byte("late"))
	require.NoError(t, err)
	b := make([]byte, 4)
	_, err = io.ReadFull(st, b)
	require.NoError(t, err, "usable after the timeout")
	assert.Equal(t, "late", string(b))
	_ = srv.CloseWithError(errors.New("done"))
	_ = st.Close()
}

// A console as libvirtd serves one (DOMAIN_OPEN_CONSOLE, played by a raw
// peer): data both ways as STREAM/CONTINUE, and the client ends the
// session with STREAM/OK, answered by the daemon's STREAM/OK.
func TestCompatDuplexAsLibvirtConsole(t *testing.T) {
	console := procedure{Prog: 0x20008086, Vers: 1, Proc: 201} // REMOTE_PROC_DOMAIN_OPEN_CONSOLE
	c, srv := compatClient(t)
	stc := openAsync(c, console, stream.Duplex, nil)
	srv.expect(frame.TypeCall, frame.StatusOK, 0)
	srv.send(hdr(console, frame.TypeReply, 0, frame.StatusOK), nil)
	st := <-stc
	require.NotNil(t, st)
	nc := st.NetConn()
	_, err := nc.Write([]byte("root\r"))
	require.NoError(t, err)
	assert.Equal(t, "root\r", string(srv.expect(frame.TypeStream, frame.StatusContinue, 0)))
	srv.send(hdr(console, frame.TypeStream, 0, frame.StatusContinue), []byte("Password: "))
	b := make([]byte, 10)
	_, err = io.ReadFull(nc, b)
	require.NoError(t, err)
	assert.Equal(t, "Password: ", string(b))
	require.NoError(t, nc.Close())
	assert.Empty(t, srv.expect(frame.TypeStream, frame.StatusOK, 0), "the client's finish")
	srv.send(hdr(console, frame.TypeStream, 0, frame.StatusOK), nil) // the daemon's answer
	require.Eventually(t, func() bool { return c.Stats().StreamsOpen == 0 }, 10*time.Second, time.Millisecond)
}
