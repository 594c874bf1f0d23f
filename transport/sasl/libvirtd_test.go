package sasl_test

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/libvirtd"
	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// TestLibvirtdSCRAM: a virtrpc client logs into a real libvirtd (Cyrus
// SASL, a sasldb made by saslpasswd2) with SCRAM-SHA-256 over its unix
// socket and over TLS, then opens test:///default and calls it; a wrong
// password fails with libvirt's authentication error and the connection
// is closed.
func TestLibvirtdSCRAM(t *testing.T) {
	libvirtd.RequireSASL(t)
	pki := newPKI(t)
	pkiDir := t.TempDir()
	require.NoError(t, pki.WriteLibvirtDir(pkiDir))
	d := libvirtd.Start(t, &libvirtd.Options{
		SASL:   &libvirtd.SASLOptions{Users: map[string]string{user: password}},
		TLSDir: pkiDir,
	})
	dialUnix := func(ctx context.Context) (net.Conn, error) { return d.Dial(ctx) }
	dialTLS := func(ctx context.Context) (net.Conn, error) {
		cfg, err := transport.LoadLibvirtClientConfig(pkiDir, testcert.ServerName)
		require.NoError(t, err)
		return transport.DialTLS(ctx, "tcp", d.TLSAddr, &transport.TLSOptions{Config: cfg, LibvirtAck: true})
	}
	for _, tr := range []struct {
		name string
		dial func(context.Context) (net.Conn, error)
	}{{"unix", dialUnix}, {"tls", dialTLS}} {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			nc, err := tr.dial(ctx)
			require.NoError(t, err)
			c, err := rpc.Client(ctx, nc, &rpc.Options{Negotiation: rpc.CompatOnly})
			require.NoError(t, err)
			defer c.Close()

			// libvirtd holds every call back until the client authenticates.
			var host libvirtd.HostnameRet
			err = c.CallXDR(ctx, libvirtd.Proc(libvirtd.ProcConnectGetHostname), nil, &host)
			var re *rpc.Error
			require.ErrorAs(t, err, &re)
			assert.Contains(t, re.Text(), "authentication required")

			// Both SCRAM mechanisms listed: libvirtd offers only the plain one.
			id, err := sasl.Authenticate(ctx, c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
			require.NoError(t, err)
			assert.Equal(t, &sasl.Identity{Mechanism: sasl.MechSCRAMSHA256, Username: user}, id)
			uri := "test:///default"
			require.NoError(t, c.CallXDR(ctx, libvirtd.Proc(libvirtd.ProcConnectOpen), &libvirtd.ConnectOpenArgs{Name: &uri}, nil))
			require.NoError(t, c.CallXDR(ctx, libvirtd.Proc(libvirtd.ProcConnectGetHostname), nil, &host))
			assert.NotEmpty(t, host.Hostname)
		})
		t.Run(tr.name+"/wrong password", func(t *testing.T) {
			ctx := testCtx(t)
			nc, err := tr.dial(ctx)
			require.NoError(t, err)
			c, err := rpc.Client(ctx, nc, &rpc.Options{Negotiation: rpc.CompatOnly})
			require.NoError(t, err)
			defer c.Close()
			_, err = sasl.Authenticate(ctx, c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{
				sasl.SCRAMSHA256(sasl.Credentials{Username: user, Password: "wrong"})}})
			require.ErrorIs(t, err, sasl.ErrAuthFailed)
			var re *rpc.Error
			require.ErrorAs(t, err, &re)
			assert.EqualValues(t, 45, re.Code, "VIR_ERR_AUTH_FAILED")
			assert.Contains(t, re.Text(), "authentication failed")
			select {
			case <-c.Done():
			default:
				t.Fatal("the connection was left open")
			}
		})
	}
}
