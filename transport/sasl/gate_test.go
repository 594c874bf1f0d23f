package sasl_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

var compat = &rpc.Options{Negotiation: rpc.CompatOnly}

func TestGateHoldsCallsBeforeAuthentication(t *testing.T) {
	f := startServer(t, fixtureOpts{})
	c := f.dial(t, compat)
	_, err := whoami(t, c)
	var re *rpc.Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "authentication required", re.Text())
	assert.Equal(t, int32(0), f.calls.Load(), "the handler never ran")

	_, err = sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
	require.NoError(t, err)
	_, err = whoami(t, c)
	require.NoError(t, err)
	assert.Equal(t, int32(1), f.calls.Load())
}

// plainAttempt makes one PLAIN attempt by hand (Authenticate would close
// the connection on the first failure) and returns the server's error.
func plainAttempt(t *testing.T, c *rpc.Conn, pass string) error {
	ctx := testCtx(t)
	if err := c.CallXDR(ctx, rpc.Procedure{Prog: sasl.RemoteProgram, Vers: 1, Proc: sasl.ProcAuthSASLInit}, nil, &sasl.SASLInitRet{}); err != nil {
		return err
	}
	args, err := xdr.Marshal(&sasl.SASLStartArgs{Mech: sasl.MechPlain, Data: []byte("\x00" + user + "\x00" + pass)})
	require.NoError(t, err)
	_, err = c.Call(ctx, rpc.Procedure{Prog: sasl.RemoteProgram, Vers: 1, Proc: sasl.ProcAuthSASLStart}, args)
	return err
}

func TestTooManyFailuresCloseTheConnection(t *testing.T) {
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{MaxFailures: 3}})
	c := f.dial(t, compat)
	for i := 1; i <= 2; i++ {
		err := plainAttempt(t, c, "wrong")
		var re *rpc.Error
		require.ErrorAs(t, err, &re, "attempt %d", i)
		assert.Contains(t, re.Text(), "wrong password")
	}
	select {
	case <-c.Done():
		t.Fatal("closed after 2 of 3 attempts")
	case <-time.After(100 * time.Millisecond):
	}
	err := plainAttempt(t, c, "wrong")
	var re *rpc.Error
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Text(), "too many failed attempts (3), closing the connection")
	require.ErrorIs(t, waitClosed(t, c, 5*time.Second), rpc.ErrPeerClosed)
	assert.Equal(t, int32(0), f.calls.Load())
}

func TestNeverAuthenticatingClientIsClosedAtTheDeadline(t *testing.T) {
	f := startServer(t, fixtureOpts{rpc: &rpc.Options{AuthTimeout: 300 * time.Millisecond}})
	start := time.Now()
	c := f.dial(t, compat)
	require.ErrorIs(t, waitClosed(t, c, 5*time.Second), rpc.ErrPeerClosed)
	assert.InDelta(t, 0.3, time.Since(start).Seconds(), 0.7)

	// An authenticated connection outlives the deadline.
	c = f.dial(t, compat)
	_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
	require.NoError(t, err)
	time.Sleep(600 * time.Millisecond)
	_, err = whoami(t, c)
	require.NoError(t, err)
}

func TestUnauthenticatedCapSparesAuthenticatedClients(t *testing.T) {
	f := startServer(t, fixtureOpts{rpc: &rpc.Options{MaxUnauthenticated: 2}})
	authed := f.dial(t, compat)
	_, err := sasl.Authenticate(testCtx(t), authed, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
	require.NoError(t, err)
	idle := []*rpc.Conn{f.dial(t, compat), f.dial(t, compat)}
	for _, c := range idle { // both are served: the gate answers them
		_, err := whoami(t, c)
		require.ErrorContains(t, err, "authentication required")
	}
	third := f.dial(t, compat)
	require.ErrorIs(t, waitClosed(t, third, 5*time.Second), rpc.ErrPeerClosed, "the third unauthenticated connection is refused")
	got, err := whoami(t, authed)
	require.NoError(t, err, "the authenticated client keeps working")
	assert.Equal(t, user, got)
	// Once one of the idle ones authenticates, a new one fits again.
	_, err = sasl.Authenticate(testCtx(t), idle[0], &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
	require.NoError(t, err)
	fourth := f.dial(t, compat)
	_, err = whoami(t, fourth)
	require.ErrorContains(t, err, "authentication required")
}

// TestTLSIdentityWhenAllowed: with TLSIdentity, a verified client
// certificate authenticates the connection (AUTH_LIST says "none", as
// libvirtd's auth_tls = "none"), subject to Authorize; without it, the
// certificate alone opens nothing.
func TestTLSIdentityWhenAllowed(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS, sasl: &sasl.ServerOptions{TLSIdentity: true}})
	c := f.dial(t, compat)
	id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds()), AllowNone: true})
	require.NoError(t, err)
	assert.Nil(t, id, "no SASL ran")
	got, err := whoami(t, c)
	require.NoError(t, err)
	assert.Equal(t, "O=virtrpc,CN=virtrpc-client", got)

	refuse := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS, sasl: &sasl.ServerOptions{TLSIdentity: true,
		Authorize: func(ctx context.Context, id *sasl.Identity) error {
			if id.Mechanism == sasl.MechTLS {
				return errors.New("certificates are not enough here")
			}
			return nil
		}}})
	c = refuse.dial(t, compat)
	id, err = sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds()), AllowNone: true})
	require.NoError(t, err, "refused as TLS identity, the client falls back to SASL")
	assert.Equal(t, sasl.MechSCRAMSHA256Plus, id.Mechanism)

	off := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS})
	c = off.dial(t, compat)
	_, err = whoami(t, c)
	require.ErrorContains(t, err, "authentication required")
	_, err = sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{}, AllowNone: true})
	require.ErrorIs(t, err, sasl.ErrMechanismNotOffered)
}

// TestFailureDelay: each refusal is held back (500 ms by default), so
// guessing is slow; a success is not.
func TestFailureDelay(t *testing.T) {
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{FailureDelay: 300 * time.Millisecond}})
	c := f.dial(t, compat)
	start := time.Now()
	err := plainAttempt(t, c, "wrong")
	require.ErrorContains(t, err, "wrong password")
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	start = time.Now()
	require.NoError(t, plainAttempt(t, c, password))
	assert.Less(t, time.Since(start), 300*time.Millisecond)
}

// TestUnixIdentityWhenAllowed: with UnixIdentity, the peer's uid on a unix
// socket authenticates the connection, subject to Authorize.
func TestUnixIdentityWhenAllowed(t *testing.T) {
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{UnixIdentity: true}})
	c := f.dial(t, compat)
	id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds()), AllowNone: true})
	require.NoError(t, err)
	assert.Nil(t, id)
	got, err := whoami(t, c)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("uid=%d", os.Getuid()), got)

	f = startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{UnixIdentity: true, Authorize: func(ctx context.Context, id *sasl.Identity) error {
		if id.Mechanism == sasl.MechUnix && id.Username != "uid=4242" {
			return errors.New("only uid 4242")
		}
		return nil
	}}})
	c = f.dial(t, compat)
	_, err = whoami(t, c)
	require.ErrorContains(t, err, "authentication required")
	id, err = sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds()), AllowNone: true})
	require.NoError(t, err, "refused by uid, the client logs in with SCRAM")
	assert.Equal(t, sasl.MechSCRAMSHA256, id.Mechanism)
}

func TestAllowUsers(t *testing.T) {
	store := &sasl.MemoryStore{}
	require.NoError(t, store.AddUser(user, password))
	require.NoError(t, store.AddUser("mallory", password))
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{
		Mechanisms: []sasl.ServerMechanism{sasl.SCRAMServer(store)}, Authorize: sasl.AllowUsers("fr?d", "admin-*")}})
	c := f.dial(t, compat)
	_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256(creds())}})
	require.NoError(t, err)
	c = f.dial(t, compat)
	_, err = sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256(sasl.Credentials{Username: "mallory", Password: password})}})
	require.ErrorIs(t, err, sasl.ErrNotAllowed)
	assert.ErrorContains(t, err, `"mallory" is not on the allowed list`)
}
