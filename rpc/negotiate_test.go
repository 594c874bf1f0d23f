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
		opts := &rpc.Options{Handlers: echoMux(), KeepaliveInterval: 50 * time.Millisecond, KeepaliveCount: 3}
		c, srv := pair(t, opts, opts)
		time.Sleep(600 * time.Millisecond)
		require.NoError(t, c.Err())
		require.NoError(t, srv.Err())
		assert.Positive(t, c.Stats().PingsSent+srv.Stats().PingsSent)
		_, err := c.Call(context.Background(), echoProc, nil)
		require.NoError(t, err)
	})
}

func TestKeepaliveSurvivesACompatReaderPause(t *testing.T) {
	ka := &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: 50 * time.Millisecond, KeepaliveCount: 2, CompatStreamBuffer: 1 << 20}
	c, _ := pair(t, ka, &rpc.Options{Handlers: streamMux(t), KeepaliveInterval: 50 * time.Millisecond, KeepaliveCount: 3})
	st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(16<<20, 40), stream.Download, nil)
	require.NoError(t, err)
	// The reader pauses for many keepalive periods; the compat read loop
	// stalls behind it, and neither side declares the other dead.
	time.Sleep(600 * time.Millisecond)
	require.NoError(t, c.Err())
	h := sha256.New()
	n, err := io.Copy(h, st)
	require.NoError(t, err)
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
