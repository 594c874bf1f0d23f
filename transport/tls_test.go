package transport_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/transport"
)

// endpoint is where a test listens: a loopback TCP address or a fresh unix
// socket path.
type endpoint struct{ network, addr string }

func endpoints(t *testing.T) []endpoint {
	return []endpoint{
		{"tcp", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
		{"unix", filepath.Join(t.TempDir(), "tls.sock")},
	}
}

// tlsServer listens with ListenTLS and serves each connection by checking
// its type, handshaking with Handshake and echoing.
func tlsServer(t *testing.T, p *testcert.PKI, ep endpoint, ack bool) net.Addr {
	t.Helper()
	ln, err := transport.ListenTLS(testCtx(t), ep.network, ep.addr,
		&transport.TLSOptions{Config: p.ServerConfig(), LibvirtAck: ack})
	require.NoError(t, err)
	serve(t, ln, func(c net.Conn) {
		if ack {
			assert.IsType(t, &transport.LibvirtServerConn{}, c)
		} else {
			assert.IsType(t, &tls.Conn{}, c)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if !assert.NoError(t, transport.Handshake(ctx, c)) {
			return
		}
		state := c.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
		if assert.Len(t, state.PeerCertificates, 1) {
			assert.Equal(t, testcert.ClientCommonName, state.PeerCertificates[0].Subject.CommonName)
		}
		echo(c)
	})
	return ln.Addr()
}

func TestDialListenTLS(t *testing.T) {
	p := newPKI(t)
	for _, ep := range endpoints(t) {
		for _, ack := range []bool{false, true} {
			name := ep.network
			if ack {
				name += "/libvirt-ack"
			}
			t.Run(name, func(t *testing.T) {
				if ep.network == "tcp6" {
					ipv6(t)
				}
				addr := tlsServer(t, p, ep, ack)
				c, err := transport.DialTLS(testCtx(t), ep.network, addr.String(),
					&transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: ack})
				require.NoError(t, err)
				defer c.Close()
				assert.Equal(t, uint16(tls.VersionTLS13), c.ConnectionState().Version)
				roundTrip(t, c, "hello over TLS")
			})
		}
	}
}

func TestDialTLSServerNameFromAddr(t *testing.T) {
	p := newPKI(t)
	addr := tlsServer(t, p, endpoint{"tcp", "127.0.0.1:0"}, false)
	cfg := p.ClientConfig()
	cfg.ServerName = "" // verify 127.0.0.1 against the certificate's IP SAN
	c, err := transport.DialTLS(testCtx(t), "tcp", addr.String(), &transport.TLSOptions{Config: cfg})
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "by IP")
}

func TestTLSMinVersion(t *testing.T) {
	p := newPKI(t)
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	old := p.ServerConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	serve(t, tls.NewListener(ln, old), echo)

	_, err = transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: p.ClientConfig()})
	require.Error(t, err, "TLS 1.3 is required by default")
	cfgNoMin := p.ClientConfig()
	cfgNoMin.MinVersion = 0
	_, err = transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: cfgNoMin})
	require.Error(t, err, "a zero MinVersion also means TLS 1.3")

	cfg12 := p.ClientConfig()
	cfg12.MinVersion = tls.VersionTLS12
	c, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: cfg12})
	require.NoError(t, err, "an explicit MinVersion is honoured")
	defer c.Close()
	assert.Equal(t, uint16(tls.VersionTLS12), c.ConnectionState().Version)
	roundTrip(t, c, "TLS 1.2 by request")
}

func TestTLSConfigErrors(t *testing.T) {
	ctx := testCtx(t)
	p := newPKI(t)
	sock := filepath.Join(t.TempDir(), "s")

	cfg := p.ClientConfig()
	cfg.ServerName = ""
	_, err := transport.DialTLS(ctx, "unix", sock, &transport.TLSOptions{Config: cfg})
	assert.ErrorContains(t, err, "ServerName")

	_, err = transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", nil)
	assert.ErrorContains(t, err, "Config")
	_, err = transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: &tls.Config{}})
	assert.ErrorContains(t, err, "certificate")

	var unknown net.UnknownNetworkError
	_, err = transport.ListenTLS(ctx, "udp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig()})
	assert.ErrorAs(t, err, &unknown)
	_, err = transport.DialTLS(ctx, "udp", "127.0.0.1:1", &transport.TLSOptions{Config: p.ClientConfig()})
	assert.ErrorAs(t, err, &unknown)
}
