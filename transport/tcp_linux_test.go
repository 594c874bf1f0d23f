package transport_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtrpc/virtrpc/transport"
)

// tcpPair returns both ends of a TCP connection made with DialTCP and
// ListenTCP, each with its own options.
func tcpPair(t *testing.T, addr string, dialOpts, listenOpts *transport.TCPOptions) (client, server net.Conn) {
	t.Helper()
	ctx := testCtx(t)
	ln, err := transport.ListenTCP(ctx, addr, listenOpts)
	require.NoError(t, err)
	defer ln.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = transport.DialTCP(ctx, ln.Addr().String(), dialOpts)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server, ok := <-accepted
	require.True(t, ok, "accept failed")
	t.Cleanup(func() { server.Close() })
	return client, server
}

func TestTCPDefaults(t *testing.T) {
	want := sockopts{NoDelay: 1, NotSentLowat: 32 << 10, KeepAlive: 1}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if addr[0] == '[' {
				ipv6(t)
			}
			client, server := tcpPair(t, addr, nil, nil)
			for name, c := range map[string]net.Conn{"client": client, "server": server} {
				_, ok := c.(*net.TCPConn)
				assert.True(t, ok, "%s is %T", name, c)
				if diff := cmp.Diff(want, readSockopts(t, c)); diff != "" {
					t.Errorf("%s sockopts (-want +got):\n%s", name, diff)
				}
			}
			go echo(server)
			roundTrip(t, client, "hello over tuned TCP")
		})
	}
}

func TestTCPOptions(t *testing.T) {
	opts := &transport.TCPOptions{NotSentLowat: 64 << 10, DisableNoDelay: true, KeepAlive: 42 * time.Second}
	client, server := tcpPair(t, "127.0.0.1:0", opts, opts)
	want := sockopts{NoDelay: 0, NotSentLowat: 64 << 10, KeepAlive: 1}
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		if diff := cmp.Diff(want, readSockopts(t, c)); diff != "" {
			t.Errorf("%s sockopts (-want +got):\n%s", name, diff)
		}
		assert.Equal(t, 42, getsockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), name)
		assert.Equal(t, 42, getsockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL), name)
	}
}

func TestTCPOptionsKernelDefaults(t *testing.T) {
	opts := &transport.TCPOptions{NotSentLowat: -1, KeepAlive: -1}
	client, server := tcpPair(t, "127.0.0.1:0", opts, opts)
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		got := readSockopts(t, c)
		// The kernel reports an untouched TCP_NOTSENT_LOWAT as 0 (use the
		// sysctl) or as the sysctl's value, depending on the socket's past.
		assert.NotEqual(t, 32<<10, got.NotSentLowat, name)
		got.NotSentLowat = 0
		if diff := cmp.Diff(sockopts{NoDelay: 1}, got); diff != "" {
			t.Errorf("%s sockopts (-want +got):\n%s", name, diff)
		}
	}
}

func TestTuneThroughTLSConn(t *testing.T) {
	p := newPKI(t)
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serve(t, tls.NewListener(ln, p.ServerConfig()), echo)

	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	require.NotEqual(t, 48<<10, getsockopt(t, raw, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT))

	tc := tls.Client(raw, p.ClientConfig())
	require.NoError(t, tc.HandshakeContext(ctx))
	require.NoError(t, transport.Tune(tc, &transport.TCPOptions{NotSentLowat: 48 << 10, DisableNoDelay: true}))
	assert.Equal(t, sockopts{NoDelay: 0, NotSentLowat: 48 << 10, KeepAlive: 1}, readSockopts(t, raw))

	require.NoError(t, transport.Tune(tc, nil), "Tune again restores the defaults")
	assert.Equal(t, sockopts{NoDelay: 1, NotSentLowat: 32 << 10, KeepAlive: 1}, readSockopts(t, raw))
	roundTrip(t, tc, "still works")
}

func TestTLSConnsAreTuned(t *testing.T) {
	p := newPKI(t)
	ctx := testCtx(t)
	for _, ack := range []bool{false, true} {
		opts := &transport.TLSOptions{Config: p.ServerConfig(), LibvirtAck: ack, TCP: &transport.TCPOptions{NotSentLowat: 16 << 10}}
		ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", opts)
		require.NoError(t, err)
		serverSide := make(chan sockopts, 1)
		serve(t, ln, func(c net.Conn) {
			serverSide <- readSockopts(t, c)
			echo(c)
		})
		c, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: ack})
		require.NoError(t, err)
		assert.Equal(t, sockopts{NoDelay: 1, NotSentLowat: 32 << 10, KeepAlive: 1}, readSockopts(t, c))
		assert.Equal(t, sockopts{NoDelay: 1, NotSentLowat: 16 << 10, KeepAlive: 1}, <-serverSide)
		roundTrip(t, c, "tuned TLS")
		c.Close()
	}
}

func TestSetNotSentLowatClosedConn(t *testing.T) {
	client, _ := tcpPair(t, "127.0.0.1:0", nil, nil)
	require.NoError(t, transport.SetNotSentLowat(client, 1000))
	assert.Equal(t, 1000, getsockopt(t, client, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT))
	client.Close()
	assert.ErrorIs(t, transport.SetNotSentLowat(client, 1000), net.ErrClosed)
}
