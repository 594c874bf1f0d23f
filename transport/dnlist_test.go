package transport_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

func TestAllowDNsPatterns(t *testing.T) {
	p := newPKI(t)
	cs := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{p.Client.Leaf}}}
	dn := "CN=virtrpc-client,O=virtrpc"
	require.Equal(t, dn, p.Client.Leaf.Subject.String())
	for _, tc := range []struct {
		patterns []string
		ok       bool
	}{
		{[]string{dn}, true},
		{[]string{"*"}, true},
		{[]string{"CN=virtrpc-*,O=virtrpc"}, true},
		{[]string{"CN=*"}, true}, // '*' runs over commas, as in libvirt
		{[]string{"CN=virtrpc-clien?,O=virtrpc"}, true},
		{[]string{"CN=other,O=virtrpc", "*,O=virtrpc"}, true},
		{[]string{"CN=virtrpc-client"}, false}, // the whole DN must match
		{[]string{"cn=virtrpc-client,o=virtrpc"}, false},
		{[]string{"CN=other*"}, false},
		{[]string{}, false},
	} {
		err := transport.AllowDNs(tc.patterns)(cs)
		if tc.ok {
			assert.NoError(t, err, "%q", tc.patterns)
			continue
		}
		var de *transport.DNError
		require.ErrorAs(t, err, &de, "%q", tc.patterns)
		assert.Equal(t, dn, de.DN)
		assert.ErrorIs(t, err, transport.ErrDNNotAllowed)
		assert.Contains(t, err.Error(), `"CN=virtrpc-client,O=virtrpc"`)
	}
}

// TestAllowedDNsOnTheListener: a client whose DN is not on the list is
// refused during the handshake; the server's error names the DN and the
// libvirt client sees the refusal.
func TestAllowedDNsOnTheListener(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name     string
		patterns []string
		ok       bool
	}{{"allowed", []string{"CN=virtrpc-*,O=virtrpc"}, true}, {"refused", []string{"CN=admin,O=virtrpc"}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{
				Config: p.ServerConfig(), LibvirtAck: true, AllowedDNs: tc.patterns})
			require.NoError(t, err)
			serverErr := make(chan error, 1)
			serve(t, ln, func(c net.Conn) {
				err := transport.Handshake(ctx, c)
				serverErr <- err
				if err == nil {
					echo(c)
				}
			})
			c, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: true})
			if tc.ok {
				require.NoError(t, err)
				defer c.Close()
				roundTrip(t, c, "hello")
				require.NoError(t, <-serverErr)
				return
			}
			require.ErrorIs(t, err, transport.ErrLibvirtRefused)
			err = <-serverErr
			var de *transport.DNError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, "CN=virtrpc-client,O=virtrpc", de.DN)
		})
	}
}

func TestAllowedDNsNeedVerifiedClients(t *testing.T) {
	p := newPKI(t)
	cfg := p.ServerConfig()
	cfg.ClientAuth = tls.RequestClientCert
	_, err := transport.ListenTLS(testCtx(t), "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: cfg, AllowedDNs: []string{"*"}})
	require.ErrorContains(t, err, "RequireAndVerifyClientCert")
}
