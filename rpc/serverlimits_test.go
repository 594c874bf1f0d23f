package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// serveTCP runs Serve on a loopback port until the test ends; every
// connection it starts is sent on conns (buffered).
func serveTCP(t *testing.T, opts *rpc.Options) (addr string, conns <-chan *rpc.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *rpc.Conn, 10000)
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(ctx, ln, opts, func(c *rpc.Conn) { ch <- c }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not end")
		}
	})
	return ln.Addr().String(), ch
}

func dialTCP(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

// refused reports whether the server closed nc without a word.
func refused(t testing.TB, nc net.Conn) bool {
	t.Helper()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err := nc.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// Connections past MaxConnections are closed as they are accepted, and a
// place freed is taken by the next.
func TestMaxConnections(t *testing.T) {
	addr, conns := serveTCP(t, &rpc.Options{MaxConnections: 5, Handlers: echoMux()})
	var kept []net.Conn
	for range 5 {
		kept = append(kept, dialTCP(t, addr))
	}
	var first *rpc.Conn
	for i := range 5 {
		c := <-conns
		if i == 0 {
			first = c
		}
	}
	for range 20 {
		assert.True(t, refused(t, dialTCP(t, addr)), "connection over MaxConnections kept")
	}
	assert.Empty(t, conns)
	for _, nc := range kept {
		assert.False(t, refused(t, nc), "connection within MaxConnections closed")
	}
	_ = first.Close()
	require.Eventually(t, func() bool {
		nc := dialTCP(t, addr)
		return !refused(t, nc)
	}, 10*time.Second, 10*time.Millisecond, "a place freed was not given to a new connection")
}

var signInProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 60}

func gatedOpts() *rpc.Options {
	mux := echoMux()
	mux.Handle(signInProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		req.Conn().Authenticate()
		return nil, nil
	})
	return &rpc.Options{Handlers: mux, Auth: &rpc.AuthGate{Procedures: []rpc.Procedure{signInProc}}}
}

// Past MaxUnauthenticated a new connection is closed at once; one that
// authenticates frees its place.
func TestMaxUnauthenticated(t *testing.T) {
	opts := gatedOpts()
	opts.MaxUnauthenticated = 3
	addr, conns := serveTCP(t, opts)
	var anon []net.Conn
	for range 3 {
		anon = append(anon, dialTCP(t, addr))
		<-conns
	}
	assert.True(t, refused(t, dialTCP(t, addr)), "a 4th unauthenticated connection was kept")
	p := newRawPeer(t, anon[0])
	p.send(hdr(procedure(signInProc), frame.TypeCall, 1, frame.StatusOK), nil)
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	assert.False(t, refused(t, dialTCP(t, addr)), "the place freed by authenticating was not given")
	for _, nc := range anon {
		assert.False(t, refused(t, nc))
	}
}

// A connection that does not authenticate within AuthTimeout is closed and
// says why; one that does is kept.
func TestAuthTimeout(t *testing.T) {
	opts := gatedOpts()
	opts.AuthTimeout = 200 * time.Millisecond
	addr, conns := serveTCP(t, opts)
	idle := dialTCP(t, addr)
	c := <-conns
	authed := dialTCP(t, addr)
	<-conns
	p := newRawPeer(t, authed)
	p.send(hdr(procedure(signInProc), frame.TypeCall, 1, frame.StatusOK), nil)
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("an unauthenticated connection outlived AuthTimeout")
	}
	assert.ErrorIs(t, c.Err(), rpc.ErrAuthTimeout)
	_, err := io.ReadAll(idle)
	assert.NoError(t, err, "the peer sees the connection end")
	time.Sleep(400 * time.Millisecond)
	p.send(hdr(procedure(echoProc), frame.TypeCall, 2, frame.StatusOK), []byte("kept"))
	assert.Equal(t, []byte("kept"), p.expect(frame.TypeReply, frame.StatusOK, 2))
}

// What one connection holds counts against the server's budget: with it
// full, another connection's large call fails with an error reply, while
// its small calls (within the connection's own reserve) still pass.
func TestServerMemoryIsShared(t *testing.T) {
	hold := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 61}
	mux := echoMux()
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	mux.Handle(hold, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		held <- struct{}{}
		<-release
		return nil, nil
	})
	defer close(release)
	addr, _ := serveTCP(t, &rpc.Options{Handlers: mux, ServerMemory: 6 << 20, ConnectionMemory: 8 << 20})
	a := newRawPeer(t, dialTCP(t, addr))
	a.send(hdr(procedure(hold), frame.TypeCall, 1, frame.StatusOK), make([]byte, 4<<20))
	<-held
	b := newRawPeer(t, dialTCP(t, addr))
	b.send(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 3<<20))
	e, err := frame.DecodeError(b.expect(frame.TypeReply, frame.StatusError, 1))
	require.NoError(t, err)
	assert.Contains(t, e.Error(), "memory budget")
	assert.Contains(t, e.Error(), "or the server's")
	b.send(hdr(procedure(echoProc), frame.TypeCall, 2, frame.StatusOK), make([]byte, 1000))
	assert.Len(t, b.expect(frame.TypeReply, frame.StatusOK, 2), 1000)
}
