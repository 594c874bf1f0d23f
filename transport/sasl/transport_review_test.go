package sasl_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// wrapped hides what it wraps: a net.Conn type StateOf cannot see into.
type wrapped struct{ net.Conn }

// unhandshaken has a ConnectionState method but no handshake behind it.
type unhandshaken struct{ net.Conn }

func (unhandshaken) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }

// TestStateOfFailsClosed: PLAIN and SCRAM run only where StateOf sees TLS
// or a unix socket; a conn it does not recognise (a tls.Conn wrapped in a
// type without ConnectionState, a pipe, a TLS conn not yet through its
// handshake) counts as unprotected, never the other way round.
func TestStateOfFailsClosed(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err == nil {
			s := tls.Server(nc, srvTLS)
			_ = s.Handshake()
			defer s.Close()
			_, _ = s.Read(make([]byte, 1))
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	tc := tls.Client(raw, cliTLS)
	assert.False(t, sasl.StateOf(tc).Secure(), "before its handshake")
	require.NoError(t, tc.Handshake())
	defer func() { tc.Close(); <-done }()

	assert.True(t, sasl.StateOf(tc).Secure())
	assert.False(t, sasl.StateOf(wrapped{tc}).Secure(), "a tls.Conn behind an unknown type")
	assert.False(t, sasl.StateOf(unhandshaken{raw}).Secure())
	assert.False(t, sasl.StateOf(raw).Secure(), "plain TCP")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	assert.False(t, sasl.StateOf(a).Secure(), "a pipe")
}

// TestExternalNeedsAVerifiedCertificate: a server that only requests a
// client certificate (tls.RequestClientCert) sees one unverified; EXTERNAL
// is not offered and TLSIdentity opens nothing, so a self-made
// certificate with any DN authenticates no one.
func TestExternalNeedsAVerifiedCertificate(t *testing.T) {
	srvTLS, _ := tlsPair(t, tls.VersionTLS13)
	srvTLS.ClientAuth = tls.RequestClientCert
	_, foreign := tlsPair(t, tls.VersionTLS13) // another CA's client certificate
	foreign.RootCAs = srvTLS.ClientCAs         // trusts our server
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: foreign, sasl: &sasl.ServerOptions{TLSIdentity: true}})
	c := f.dial(t, compat)
	st := c.NetConn().(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
	require.NotEmpty(t, st.PeerCertificates, "the client did present its certificate")
	_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.External("")}, AllowNone: true})
	require.ErrorIs(t, err, sasl.ErrMechanismNotOffered)
	assert.Equal(t, int32(0), f.calls.Load())
}

// TestPlusOnResumedTLS12: tls-server-end-point hashes the server's
// certificate, which a resumed TLS 1.2 session still knows on both sides,
// so -PLUS works on a resumed session (and the hash is SHA-256 for these
// ECDSA-SHA256 certificates).
func TestPlusOnResumedTLS12(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS12)
	cliTLS.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS})
	for i, resumed := range []bool{false, true} {
		c := f.dial(t, &rpc.Options{Negotiation: rpc.CompatOnly})
		st := c.NetConn().(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
		require.Equal(t, resumed, st.DidResume, "connection %d", i)
		id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256Plus(creds())}})
		require.NoError(t, err, "connection %d", i)
		assert.True(t, id.ChannelBound)
		_ = c.Close()
	}
}
