package transport_test

import (
	"context"
	"crypto/tls"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

func TestLibvirtPKIDir(t *testing.T) {
	p := newPKI(t)
	dir := filepath.Join(t.TempDir(), "pki")
	require.NoError(t, p.WriteLibvirtDir(dir))

	serverCfg, err := transport.LoadLibvirtServerConfig(dir)
	require.NoError(t, err)
	assert.Equal(t, tls.RequireAndVerifyClientCert, serverCfg.ClientAuth)
	assert.Equal(t, uint16(tls.VersionTLS13), serverCfg.MinVersion)

	for _, serverName := range []string{"localhost", ""} {
		t.Run("serverName="+serverName, func(t *testing.T) {
			clientCfg, err := transport.LoadLibvirtClientConfig(dir, serverName)
			require.NoError(t, err)
			assert.Equal(t, uint16(tls.VersionTLS13), clientCfg.MinVersion)

			ctx := testCtx(t)
			ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0",
				&transport.TLSOptions{Config: serverCfg, LibvirtAck: true})
			require.NoError(t, err)
			serve(t, ln, echo)

			c, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(),
				&transport.TLSOptions{Config: clientCfg, LibvirtAck: true})
			require.NoError(t, err)
			defer c.Close()
			state := c.ConnectionState()
			require.NotEmpty(t, state.PeerCertificates)
			assert.Equal(t, p.Server.Certificate[0], state.PeerCertificates[0].Raw)
			roundTrip(t, c, "libvirt PKI")
		})
	}
}

func TestLibvirtPKIDirErrors(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()

	_, err := transport.LoadLibvirtServerConfig(dir)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	_, err = transport.LoadLibvirtClientConfig(dir, "localhost")
	assert.ErrorIs(t, err, fs.ErrNotExist)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "cacert.pem"), []byte("not PEM"), 0o644))
	_, err = transport.LoadLibvirtServerConfig(dir)
	assert.ErrorContains(t, err, "no PEM certificate")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "cacert.pem"), p.CAPEM, 0o644))
	_, err = transport.LoadLibvirtClientConfig(dir, "localhost")
	assert.ErrorIs(t, err, fs.ErrNotExist, "no client key pair yet")

	// A key that does not match the certificate.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "clientcert.pem"), p.ClientCertPEM, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "clientkey.pem"), p.ServerKeyPEM, 0o600))
	_, err = transport.LoadLibvirtClientConfig(dir, "localhost")
	assert.ErrorContains(t, err, "clientkey.pem")
}

// rawTLSServer runs a crypto/tls server (not ListenTLS) that completes the
// handshake and then does what after wants.
func rawTLSServer(t *testing.T, cfg *tls.Config, after func(*tls.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serve(t, tls.NewListener(ln, cfg), func(c net.Conn) {
		tc := c.(*tls.Conn)
		if err := tc.HandshakeContext(context.Background()); err != nil {
			return
		}
		after(tc)
	})
	return ln.Addr().String()
}

func TestLibvirtAckRefused(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	opts := &transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: true}

	t.Run("zero byte", func(t *testing.T) {
		addr := rawTLSServer(t, p.ServerConfig(), func(c *tls.Conn) { c.Write([]byte{0}) })
		c, err := transport.DialTLS(testCtx(t), "tcp", addr, opts)
		assert.Nil(t, c)
		require.ErrorIs(t, err, transport.ErrLibvirtRefused)
		assert.ErrorContains(t, err, "0x00")
		t.Log(err)
	})
	t.Run("closed", func(t *testing.T) {
		addr := rawTLSServer(t, p.ServerConfig(), func(c *tls.Conn) { c.Close() })
		_, err := transport.DialTLS(testCtx(t), "tcp", addr, opts)
		require.ErrorIs(t, err, transport.ErrLibvirtRefused)
		assert.ErrorIs(t, err, io.EOF)
		t.Log(err)
	})
	t.Run("foreign client certificate", func(t *testing.T) {
		ln, err := transport.ListenTLS(testCtx(t), "tcp", "127.0.0.1:0",
			&transport.TLSOptions{Config: p.ServerConfig(), LibvirtAck: true})
		require.NoError(t, err)
		serverErr := make(chan error, 1)
		hsCtx := testCtx(t)
		serve(t, ln, func(c net.Conn) { serverErr <- transport.Handshake(hsCtx, c) })

		cfg := other.ClientConfig()
		cfg.RootCAs = p.Pool
		_, err = transport.DialTLS(testCtx(t), "tcp", ln.Addr().String(),
			&transport.TLSOptions{Config: cfg, LibvirtAck: true})
		require.ErrorIs(t, err, transport.ErrLibvirtRefused)
		t.Log(err)
		assert.ErrorContains(t, <-serverErr, "certificate")
	})
}

// TestAcceptLibvirtTLS drives the server side by hand on a crypto/tls
// listener.
func TestAcceptLibvirtTLS(t *testing.T) {
	p := newPKI(t)
	addr := rawTLSServer(t, p.ServerConfig(), func(c *tls.Conn) {
		if assert.NoError(t, transport.AcceptLibvirtTLS(context.Background(), c)) {
			echo(c)
		}
	})
	c, err := transport.DialTLS(testCtx(t), "tcp", addr, &transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: true})
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "hand-made server")
}

// TestLibvirtServerConnLazy: without Handshake, concurrent first Read and
// Write on the server side send the acknowledgement exactly once, ahead of
// any data.
func TestLibvirtServerConnLazy(t *testing.T) {
	p := newPKI(t)
	ctx := testCtx(t)
	ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig(), LibvirtAck: true})
	require.NoError(t, err)
	got := make(chan string, 1)
	serve(t, ln, func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := c.Write([]byte("pong"))
			assert.NoError(t, err)
		})
		wg.Go(func() {
			buf := make([]byte, 4)
			_, err := io.ReadFull(c, buf)
			assert.NoError(t, err)
			got <- string(buf)
		})
		wg.Wait()
	})

	// Dial without LibvirtAck to see the raw byte stream.
	c, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: p.ClientConfig()})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	if diff := cmp.Diff([]byte{0x01, 'p', 'o', 'n', 'g'}, buf); diff != "" {
		t.Errorf("server stream (-want +got):\n%s", diff)
	}
	assert.Equal(t, "ping", <-got)
}

// TestLibvirtServerConnStickyError: a failed handshake fails every later
// call the same way.
func TestLibvirtServerConnStickyError(t *testing.T) {
	p := newPKI(t)
	ctx := testCtx(t)
	ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig(), LibvirtAck: true})
	require.NoError(t, err)
	defer ln.Close()

	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	require.NoError(t, err)

	c, err := ln.Accept()
	require.NoError(t, err)
	defer c.Close()
	_, err1 := c.Read(make([]byte, 1))
	require.Error(t, err1)
	_, err2 := c.Write([]byte("x"))
	assert.Equal(t, err1, err2)
	assert.Equal(t, err1, transport.Handshake(ctx, c))
	t.Log(err1)
}
