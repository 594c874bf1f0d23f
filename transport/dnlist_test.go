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
	dn := "O=virtrpc,CN=virtrpc-client" // libvirtd's order, not pkix.Name.String's
	require.Equal(t, dn, transport.DN(p.Client.Leaf))
	for _, tc := range []struct {
		patterns []string
		ok       bool
	}{
		{[]string{dn}, true},
		{[]string{"*"}, true},
		{[]string{"O=virtrpc,CN=virtrpc-*"}, true},
		{[]string{"O=*"}, true}, // '*' runs over commas, as in libvirt
		{[]string{"O=virtrpc,CN=virtrpc-clien?"}, true},
		{[]string{"O=virtrpc,CN=other", "*,CN=virtrpc-client"}, true},
		{[]string{"CN=virtrpc-client"}, false},           // the whole DN must match
		{[]string{"CN=virtrpc-client,O=virtrpc"}, false}, // crypto/x509's order is not libvirt's
		{[]string{"o=virtrpc,cn=virtrpc-client"}, false},
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
		assert.Contains(t, err.Error(), `"O=virtrpc,CN=virtrpc-client"`)
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
	}{{"allowed", []string{"O=virtrpc,CN=virtrpc-*"}, true}, {"refused", []string{"O=virtrpc,CN=admin"}, false}} {
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
			assert.Equal(t, "O=virtrpc,CN=virtrpc-client", de.DN)
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
