package sasl_test

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// startRelay is a TLS-terminating relay: it presents its own certificate
// (from relayPKI, which the client trusts), and re-encrypts toward the
// server at upstream with upstreamTLS. It returns its address.
func startRelay(t *testing.T, relayTLS *tls.Config, upstream string, upstreamTLS *tls.Config) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", relayTLS)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer down.Close()
				up, err := tls.Dial("tcp", upstream, upstreamTLS)
				if err != nil {
					return
				}
				defer up.Close()
				var pipe sync.WaitGroup
				pipe.Go(func() { _, _ = io.Copy(up, down); _ = up.CloseWrite() })
				_, _ = io.Copy(down, up)
				_ = down.Close()
				_ = up.Close()
				pipe.Wait()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// TestRelayBreaksOnlyPlus: through a relay that terminates TLS with a
// certificate the client trusts, SCRAM-SHA-256-PLUS fails with a
// channel-binding error (the two TLS channels differ), and plain SCRAM
// succeeds: what -PLUS is for.
func TestRelayBreaksOnlyPlus(t *testing.T) {
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			srvTLS, upstreamTLS := tlsPair(t, v.version)
			f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS})
			relayTLS, cliTLS := tlsPair(t, v.version) // another CA: the relay's, trusted by the client
			relayTLS.ClientAuth = tls.NoClientCert
			f.addr = startRelay(t, relayTLS, f.addr, upstreamTLS)
			f.tlsClient = cliTLS

			c := f.dial(t, &rpc.Options{Negotiation: rpc.CompatOnly})
			_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
			require.ErrorIs(t, err, sasl.ErrChannelBinding, "the client prefers -PLUS and the server offers it: the relay is caught")
			require.ErrorIs(t, err, sasl.ErrAuthFailed)
			<-c.Done()

			c = f.dial(t, &rpc.Options{Negotiation: rpc.CompatOnly})
			id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256(creds())}})
			require.NoError(t, err, "plain SCRAM does not see the relay")
			assert.False(t, id.ChannelBound)
			got, err := whoami(t, c)
			require.NoError(t, err)
			assert.Equal(t, user, got)
		})
	}
}

// TestDowngradeToPlainSCRAMIsCaught: a client that could bind but saw no
// -PLUS in the list (a relay stripped it) says so ("y"); a server that does
// offer -PLUS on that channel refuses it as a downgrade.
func TestDowngradeToPlainSCRAMIsCaught(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	a, b := net.Pipe()
	server, client := tls.Server(a, srvTLS), tls.Client(b, cliTLS)
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	require.NoError(t, client.Handshake())
	require.NoError(t, <-errc)
	defer a.Close() // not the tls.Conns: close_notify would block on the unread pipe
	defer b.Close()
	st := server.ConnectionState()
	cs := sasl.ConnState{TLS: &st, Offered: []string{sasl.MechSCRAMSHA256Plus, sasl.MechSCRAMSHA256}}
	sess, err := sasl.SCRAMServer(fuzzStore()).Start(cs)
	require.NoError(t, err)
	_, _, err = sess.Step([]byte("y,,n=fred,r=abcdefgh"))
	require.ErrorIs(t, err, sasl.ErrChannelBinding)
	assert.ErrorContains(t, err, "downgrade")

	// "p" on the mechanism without -PLUS is refused too.
	sess, err = sasl.SCRAMServer(fuzzStore()).Start(cs)
	require.NoError(t, err)
	_, _, err = sess.Step([]byte("p=tls-exporter,,n=fred,r=abcdefgh"))
	require.ErrorIs(t, err, sasl.ErrChannelBinding)
}
