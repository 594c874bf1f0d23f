package rpc_test

import (
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

func TestNegotiation(t *testing.T) {
	t.Run("two virtrpc peers agree on native mode", func(t *testing.T) {
		c, srv := pair(t, &rpc.Options{Negotiation: rpc.RequireNative}, &rpc.Options{Handlers: echoMux(), Negotiation: rpc.RequireNative})
		assert.Equal(t, rpc.ModeNative, c.Mode())
		assert.Equal(t, rpc.ModeNative, srv.Mode())
		assert.Equal(t, "native", c.Stats().Mode.String())
		assert.Positive(t, c.RTT())
	})

	// A CompatOnly server answers HELLO exactly as libvirtd answers a call
	// to a program it does not serve.
	libvirtLike := &rpc.Options{Handlers: echoMux(), Negotiation: rpc.CompatOnly}

	t.Run("require fails up front with a clear error", func(t *testing.T) {
		cc, sc := tlsPair(t, testPKI(t))
		srv := rpc.Server(sc, libvirtLike)
		defer srv.Close()
		c, err := rpc.Client(context.Background(), cc, &rpc.Options{Negotiation: rpc.RequireNative})
		require.Nil(t, c)
		require.ErrorIs(t, err, rpc.ErrNativeRefused)
		var re *rpc.Error
		require.ErrorAs(t, err, &re)
		assert.Contains(t, err.Error(), "Cannot find program")
	})

	t.Run("accept compat runs in compat mode", func(t *testing.T) {
		c, srv := pair(t, nil, libvirtLike)
		assert.Equal(t, rpc.ModeCompat, c.Mode())
		assert.Equal(t, rpc.ModeCompat, srv.Mode())
		got, err := c.Call(context.Background(), echoProc, []byte("still works"))
		require.NoError(t, err)
		assert.Equal(t, "still works", string(got))
		// libvirt lets only the server send MESSAGE frames, and only the
		// client call.
		require.ErrorIs(t, c.Send(context.Background(), eventProc, nil), rpc.ErrCompatMode)
		_, err = srv.Call(context.Background(), echoProc, nil)
		require.ErrorIs(t, err, rpc.ErrCompatMode)
		require.NoError(t, srv.Send(context.Background(), eventProc, nil))
	})

	t.Run("a server that requires native mode drops a libvirt client", func(t *testing.T) {
		c, srv := pair(t, &rpc.Options{Negotiation: rpc.CompatOnly}, &rpc.Options{Handlers: echoMux(), Negotiation: rpc.RequireNative})
		_, err := c.Call(context.Background(), echoProc, nil)
		require.ErrorIs(t, err, net.ErrClosed)
		<-srv.Done()
		require.ErrorIs(t, srv.Err(), rpc.ErrNativeRefused)
	})

	t.Run("a server that requires native mode does not serve after refusing a HELLO", func(t *testing.T) {
		// A HELLO with unusable limits is refused; a client that accepts
		// compat would then go on in compat mode, which the server must
		// not serve either.
		srv, raw := rawServer(t, &rpc.Options{Handlers: echoMux(), Negotiation: rpc.RequireNative})
		p := newRawPeer(t, raw)
		_, err := raw.Write(helloFrame(0))
		require.NoError(t, err)
		p.expect(frame.TypeReply, frame.StatusError, 0)
		p.send(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), []byte("hi"))
		select {
		case <-srv.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the server still serves in %s mode", srv.Mode())
		}
		require.ErrorIs(t, srv.Err(), rpc.ErrNativeRefused)
		assert.Equal(t, rpc.ModeCompat, srv.Mode())
	})
}

func TestKeepalive(t *testing.T) {
	t.Run("a silent peer is declared dead after interval x (count+1)", func(t *testing.T) {
		a, b := tcpPair(t)
		defer b.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }() // reads, never answers
		const interval, count = 40 * time.Millisecond, 2
		start := time.Now()
		c, err := rpc.Client(context.Background(), a, &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: interval, KeepaliveCount: count})
		require.NoError(t, err)
		defer c.Close()
		callErr := make(chan error, 1)
		go func() {
			_, err := c.Call(context.Background(), echoProc, nil)
			callErr <- err
		}()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the dead peer was never detected")
		}
		assert.GreaterOrEqual(t, time.Since(start), interval*(count+1))
		require.ErrorIs(t, c.Err(), rpc.ErrKeepaliveTimeout)
		err = <-callErr
		require.ErrorIs(t, err, rpc.ErrKeepaliveTimeout)
		require.ErrorIs(t, err, net.ErrClosed)
		assert.Positive(t, c.Stats().PingsSent)
	})

	t.Run("a live idle peer stays connected", func(t *testing.T) {
		// Pings every 50 ms, dead after 500 ms of silence: a loaded -race
		// run can starve a goroutine for a few intervals, not for ten.
		const interval, count = 50 * time.Millisecond, 9
		opts := &rpc.Options{Handlers: echoMux(), KeepaliveInterval: interval, KeepaliveCount: count}
		c, srv := pair(t, opts, opts)
		// Idle for twice the time that kills a peer that never answers,
		// and for at least as many pings as it takes: the time alone
		// could pass in a stall where nobody pinged.
		start := time.Now()
		require.Eventually(t, func() bool {
			return c.Err() != nil || srv.Err() != nil ||
				time.Since(start) >= 2*interval*(count+1) && c.Stats().PingsSent+srv.Stats().PingsSent >= 2*(count+1)
		}, 30*time.Second, 10*time.Millisecond)
		require.NoError(t, c.Err())
		require.NoError(t, srv.Err())
		_, err := c.Call(context.Background(), echoProc, nil)
		require.NoError(t, err)
	})
}

func TestKeepaliveSurvivesACompatReaderPause(t *testing.T) {
	// The client's own deadline (150 ms) passes many times over during the
	// pause; it must not count its paused read loop's silence as the
	// server's. The server's (600 ms) passes too; the client's pings,
	// every 50 ms while paused, keep it from declaring the client dead,
	// with room for a loaded -race run to starve the client for a while.
	const interval = 50 * time.Millisecond
	ka := &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: interval, KeepaliveCount: 2, CompatStreamBuffer: 1 << 20}
	c, srv := pair(t, ka, &rpc.Options{Handlers: streamMux(t), KeepaliveInterval: interval, KeepaliveCount: 11})
	st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(16<<20, 40), stream.Download, nil)
	require.NoError(t, err)
	// The reader pauses for many keepalive periods; the compat read loop
	// stalls behind it, and neither side declares the other dead. The
	// pause lasts past the server's deadline and until the client has
	// pinged through it.
	start, pings := time.Now(), c.Stats().PingsSent
	require.Eventually(t, func() bool {
		return c.Err() != nil || srv.Err() != nil ||
			time.Since(start) >= 1200*time.Millisecond && c.Stats().PingsSent-pings >= 12
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, c.Err())
	require.NoError(t, srv.Err())
	h := sha256.New()
	n, err := io.Copy(h, st)
	require.NoError(t, err, "server: %v", srv.Err())
	require.EqualValues(t, 16<<20, n)
	require.Equal(t, digest(16<<20, 40), h.Sum(nil))
	require.NoError(t, st.Close())
}

func TestHelloWithUnusableLimitsIsRefused(t *testing.T) {
	srv, raw := rawServer(t, &rpc.Options{Handlers: echoMux()})
	p := newRawPeer(t, raw)
	_, err := raw.Write(helloFrame(0)) // a zero initial window would stall every stream
	require.NoError(t, err)
	e, derr := frame.DecodeError(p.expect(frame.TypeReply, frame.StatusError, 0))
	require.NoError(t, derr)
	assert.Contains(t, e.Text(), "initial window 0 (minimum 65536) too small")
	assert.Equal(t, rpc.ModeCompat, srv.Mode())
}
