package rpc_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// Accept runs the TLS handshake and returns once the peer's first call
// settled the mode: native after a HELLO, compat after any other call.
func TestAcceptReturnsTheSettledMode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client *rpc.Options
		want   rpc.Mode
	}{{"native", nil, rpc.ModeNative}, {"compat", &rpc.Options{Negotiation: rpc.CompatOnly}, rpc.ModeCompat}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			accepted := make(chan *rpc.Conn, 1)
			go func() {
				srv, err := rpc.Accept(context.Background(), tls.Server(b, testPKI(t).ServerConfig()), &rpc.Options{Handlers: echoMux()})
				assert.NoError(t, err)
				accepted <- srv
			}()
			c, err := rpc.Client(context.Background(), tls.Client(a, testPKI(t).ClientConfig()), tc.client)
			require.NoError(t, err)
			defer c.Close()
			select {
			case <-c.Negotiated(): // closed when Client returns
			default:
				t.Fatal("the dialing side's Negotiated is open after Client returned")
			}
			if tc.want == rpc.ModeCompat { // the first call settles it
				_, err := c.Call(context.Background(), echoProc, []byte("first"))
				require.NoError(t, err)
			}
			srv := <-accepted
			require.NotNil(t, srv)
			defer srv.Close()
			assert.Equal(t, tc.want, srv.Mode())
			assert.Equal(t, tc.want, c.Mode())
		})
	}
}

// The server's Negotiated is closed before the peer's Client returns: a
// server may call as soon as the peer thinks the connection native.
func TestServerNegotiatedBeforeClientReturns(t *testing.T) {
	for range 20 {
		c, srv := pair(t, nil, nil)
		select {
		case <-srv.Negotiated():
		default:
			t.Fatal("the server's mode is not settled though the client's Client returned")
		}
		require.Equal(t, rpc.ModeNative, srv.Mode())
		_ = c.Close()
		_ = srv.Close()
	}
}

// Accept toward a peer that never handshakes, or never calls, returns with
// its ctx and leaves nothing running.
func TestAcceptHonoursCtx(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"TLS handshake", func(nc net.Conn) net.Conn { return tls.Server(nc, testPKI(t).ServerConfig()) }},
		{"first call", func(nc net.Conn) net.Conn { return nc }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			a, b := tcpPair(t)
			defer a.Close()
			returnsWithCtx(t, func(ctx context.Context) error {
				_, err := rpc.Accept(ctx, tc.wrap(b), nil)
				return err
			})
			_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := a.Read(make([]byte, 1))
			require.Error(t, err, "the accepted connection is closed")
			verifyNoLeak(t, ignore)
		})
	}
}

// A RequireNative server whose peer calls without HELLO: Accept fails.
func TestAcceptFailsWhenNegotiationFails(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	p := newRawPeer(t, a)
	go p.send(hdr(echoProc, frame.TypeCall, 1, frame.StatusOK), nil)
	_, err := rpc.Accept(context.Background(), b, &rpc.Options{Negotiation: rpc.RequireNative})
	require.ErrorIs(t, err, rpc.ErrNativeRefused)
	require.ErrorIs(t, err, net.ErrClosed)
}

// Client runs the TLS handshake bounded by its ctx, also in compat mode
// (where no HELLO is written), and leaves nothing running when it fails.
func TestClientHonoursCtxDuringTheHandshake(t *testing.T) {
	for _, opts := range []*rpc.Options{nil, {Negotiation: rpc.CompatOnly}} {
		ignore := goleak.IgnoreCurrent()
		a, b := tcpPair(t) // b never answers the handshake
		returnsWithCtx(t, func(ctx context.Context) error {
			_, err := rpc.Client(ctx, tls.Client(a, testPKI(t).ClientConfig()), opts)
			return err
		})
		_ = b.Close()
		verifyNoLeak(t, ignore)
	}
}
