package transport_test

import (
	"crypto/x509"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

// A server whose certificate does not name the host dialled is refused,
// with crypto/x509's error saying which name was wanted (errors.As).
func TestDialTLSRefusesAWrongHostName(t *testing.T) {
	p := newPKI(t)
	ln, err := transport.ListenTLS(testCtx(t), "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig()})
	require.NoError(t, err)
	serverErr := make(chan error, 1)
	hsCtx := testCtx(t)
	serve(t, ln, func(c net.Conn) { serverErr <- transport.Handshake(hsCtx, c) })
	cfg := p.ClientConfig()
	cfg.ServerName = "not-the-server.example"
	c, err := transport.DialTLS(testCtx(t), "tcp", ln.Addr().String(), &transport.TLSOptions{Config: cfg})
	assert.Nil(t, c)
	var he x509.HostnameError
	require.ErrorAs(t, err, &he, "%v", err)
	assert.Equal(t, "not-the-server.example", he.Host)
	assert.ErrorContains(t, err, "not-the-server.example")
	assert.Error(t, <-serverErr, "the server sees the client give up")
}
