package sasl_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

func tlsPair(t *testing.T, version uint16) (server, client *tls.Config) {
	p := newPKI(t)
	server, client = p.ServerConfig(), p.ClientConfig()
	server.MinVersion, server.MaxVersion = version, version
	client.MinVersion, client.MaxVersion = version, version
	return server, client
}

func TestSCRAMPlusOverTLS(t *testing.T) {
	for _, v := range []struct {
		name    string
		version uint16
		mode    rpc.Negotiation
	}{{"TLS1.3", tls.VersionTLS13, rpc.CompatOnly}, {"TLS1.2", tls.VersionTLS12, rpc.CompatOnly}, {"TLS1.3-native", tls.VersionTLS13, rpc.RequireNative}} {
		t.Run(v.name, func(t *testing.T) {
			srvTLS, cliTLS := tlsPair(t, v.version)
			f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS})
			c := f.dial(t, &rpc.Options{Negotiation: v.mode})
			id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
			require.NoError(t, err)
			assert.Equal(t, &sasl.Identity{Mechanism: sasl.MechSCRAMSHA256Plus, Username: user, ChannelBound: true}, id)
			got, err := whoami(t, c)
			require.NoError(t, err)
			assert.Equal(t, user, got)
		})
	}
}

func TestMechanismsOverUnix(t *testing.T) {
	for _, m := range []sasl.ClientMechanism{sasl.SCRAMSHA256(creds()), sasl.Plain(creds()), sasl.External("")} {
		t.Run(m.Name(), func(t *testing.T) {
			f := startServer(t, fixtureOpts{})
			c := f.dial(t, &rpc.Options{Negotiation: rpc.CompatOnly})
			id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{m}})
			require.NoError(t, err)
			assert.Equal(t, m.Name(), id.Mechanism)
			got, err := whoami(t, c)
			require.NoError(t, err)
			want := user
			if m.Name() == sasl.MechExternal {
				want = fmt.Sprintf("uid=%d", os.Getuid()) // SO_PEERCRED
			}
			assert.Equal(t, want, got)
		})
	}
}

func TestExternalTakesTheCertificateDN(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS})
	c := f.dial(t, nil)
	id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.External("")}})
	require.NoError(t, err)
	assert.Equal(t, sasl.MechExternal, id.Mechanism)
	got, err := whoami(t, c)
	require.NoError(t, err)
	assert.Equal(t, "O=virtrpc,CN=virtrpc-client", got)
}

func TestFailuresNameTheirCause(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS})
	cases := []struct {
		name  string
		mechs []sasl.ClientMechanism
		want  error
	}{
		{"wrong password", []sasl.ClientMechanism{sasl.SCRAMSHA256Plus(sasl.Credentials{Username: user, Password: "nope"})}, sasl.ErrWrongPassword},
		{"unknown user", []sasl.ClientMechanism{sasl.SCRAMSHA256(sasl.Credentials{Username: "bob", Password: password})}, sasl.ErrUnknownUser},
		{"plain wrong password", []sasl.ClientMechanism{sasl.Plain(sasl.Credentials{Username: user, Password: "nope"})}, sasl.ErrWrongPassword},
		{"authzid of another", []sasl.ClientMechanism{sasl.SCRAMSHA256(sasl.Credentials{Username: user, Password: password, AuthzID: "root"})}, sasl.ErrNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t, nil)
			_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: tc.mechs})
			require.ErrorIs(t, err, sasl.ErrAuthFailed)
			require.ErrorIs(t, err, tc.want)
			var re *rpc.Error
			require.ErrorAs(t, err, &re, "the server's error reply is reachable")
			assert.EqualValues(t, 45, re.Code, "VIR_ERR_AUTH_FAILED")
			<-c.Done() // Authenticate closed it
			assert.Equal(t, int32(0), f.calls.Load())
		})
	}
}

func TestPlusOnlyNeverDowngrades(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS,
		sasl: &sasl.ServerOptions{Mechanisms: []sasl.ServerMechanism{sasl.SCRAMServer(&sasl.MemoryStore{})}}})
	c := f.dial(t, nil)
	_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256Plus(creds())}})
	require.ErrorIs(t, err, sasl.ErrMechanismNotOffered)
	assert.ErrorContains(t, err, "client wants SCRAM-SHA-256-PLUS, server offers SCRAM-SHA-256")
}

func TestPlainTCPRefusedUnlessAllowed(t *testing.T) {
	t.Run("client refuses", func(t *testing.T) {
		f := startServer(t, fixtureOpts{network: "tcp", sasl: &sasl.ServerOptions{AllowInsecure: true}})
		c := f.dial(t, nil)
		_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
		require.ErrorIs(t, err, sasl.ErrInsecureTransport)
	})
	t.Run("server refuses", func(t *testing.T) {
		f := startServer(t, fixtureOpts{network: "tcp"})
		c := f.dial(t, nil)
		_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds()), AllowInsecure: true})
		require.ErrorIs(t, err, sasl.ErrMechanismNotOffered, "nothing is offered on plain TCP")
	})
	t.Run("both allow", func(t *testing.T) {
		f := startServer(t, fixtureOpts{network: "tcp", sasl: &sasl.ServerOptions{AllowInsecure: true}})
		c := f.dial(t, nil)
		id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds()), AllowInsecure: true})
		require.NoError(t, err)
		assert.Equal(t, sasl.MechSCRAMSHA256, id.Mechanism)
	})
}

func TestClientRefusesHugeIterationCounts(t *testing.T) {
	sess, err := sasl.SCRAMSHA256(creds()).Start(sasl.ConnState{Local: true})
	require.NoError(t, err)
	first, err := sess.Step(nil)
	require.NoError(t, err)
	nonce := string(first[len("n,,n=fred,r="):])
	_, err = sess.Step([]byte("r=" + nonce + "xyz,s=c2FsdA==,i=100000000"))
	require.ErrorIs(t, err, sasl.ErrMalformed)
	assert.ErrorContains(t, err, "iterations")
}

// TestReplayedExchangeFails: a client-final message recorded from one
// exchange (capture 08: virsh with fred's right password) is refused by a
// new server conversation, whose nonce differs.
func TestReplayedExchangeFails(t *testing.T) {
	p := capturedAuth(t)
	_, first, err := sasl.DecodeSASLStart(p["c8"])
	require.NoError(t, err)
	final, err := sasl.DecodeSASLStep(p["c9"])
	require.NoError(t, err)
	sess, err := sasl.SCRAMServer(fuzzStore()).Start(sasl.ConnState{Local: true})
	require.NoError(t, err)
	_, done, err := sess.Step(first)
	require.NoError(t, err)
	require.False(t, done)
	_, done, err = sess.Step(final)
	require.ErrorIs(t, err, sasl.ErrAuthFailed)
	require.ErrorIs(t, err, sasl.ErrMalformed)
	assert.ErrorContains(t, err, "nonce")
	assert.False(t, done)
	assert.Nil(t, sess.Identity())
}

func TestConcealReasons(t *testing.T) {
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{ConcealReasons: true}})
	for _, c := range []sasl.Credentials{{Username: user, Password: "nope"}, {Username: "bob", Password: password}} {
		conn := f.dial(t, compat)
		_, err := sasl.Authenticate(testCtx(t), conn, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256(c)}})
		require.ErrorIs(t, err, sasl.ErrAuthFailed)
		assert.NotErrorIs(t, err, sasl.ErrWrongPassword)
		assert.NotErrorIs(t, err, sasl.ErrUnknownUser)
		var re *rpc.Error
		require.ErrorAs(t, err, &re)
		assert.Equal(t, "authentication failed", re.Text())
	}
}
