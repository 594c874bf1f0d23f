package sasl_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// Sequences a client may send by hand, out of the order Authenticate
// keeps: each names its cause, none opens the gate unless it should, and
// the ones that are no attempt at all do not count as failures.

func authProc(n int32) rpc.Procedure {
	return rpc.Procedure{Prog: sasl.RemoteProgram, Vers: sasl.RemoteVersion, Proc: n}
}

// rawArgs is SASLStartArgs without the encoder's bound, to send what a
// hostile client would.
type rawStart struct {
	Mech string
	Nil  int32
	Data []byte `xdr:"char"`
}

type rawStep struct {
	Nil  int32
	Data []byte `xdr:"char"`
}

func start(t *testing.T, c *rpc.Conn, mech string, isNil int32, d []byte) (*sasl.SASLReply, error) {
	t.Helper()
	b, err := xdr.Marshal(&rawStart{Mech: mech, Nil: isNil, Data: d})
	require.NoError(t, err)
	return reply(t, c, sasl.ProcAuthSASLStart, b)
}

func step(t *testing.T, c *rpc.Conn, isNil int32, d []byte) (*sasl.SASLReply, error) {
	t.Helper()
	b, err := xdr.Marshal(&rawStep{Nil: isNil, Data: d})
	require.NoError(t, err)
	return reply(t, c, sasl.ProcAuthSASLStep, b)
}

func reply(t *testing.T, c *rpc.Conn, p int32, args []byte) (*sasl.SASLReply, error) {
	t.Helper()
	b, err := c.Call(testCtx(t), authProc(p), args)
	if err != nil {
		return nil, err
	}
	var r sasl.SASLReply
	require.NoError(t, xdr.Unmarshal(b, &r))
	return &r, nil
}

// reasonOf is the reason a virtrpc server put in str2 ("" if none).
func reasonOf(err error) string {
	var re *rpc.Error
	if err == nil || !asRPC(err, &re) || re.Str2 == nil {
		return ""
	}
	return strings.TrimPrefix(*re.Str2, "virtrpc-sasl:")
}

func asRPC(err error, re **rpc.Error) bool {
	for err != nil {
		if e, ok := err.(*rpc.Error); ok {
			*re = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

var plainOK = []byte("\x00" + user + "\x00" + password)

func TestOutOfOrderSequences(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *rpc.Conn)
	}{
		{"STEP before START is refused and not counted", func(t *testing.T, c *rpc.Conn) {
			for range 5 { // more than MaxFailures
				_, err := step(t, c, 0, []byte("c=biws,r=x,p=AAAA"))
				require.ErrorContains(t, err, "no authentication in progress")
			}
			r, err := start(t, c, sasl.MechPlain, 0, plainOK)
			require.NoError(t, err, "still open: the stray steps were no attempts")
			assert.EqualValues(t, 1, r.Complete)
		}},
		{"START with a mechanism not offered", func(t *testing.T, c *rpc.Conn) {
			_, err := start(t, c, "GSSAPI", 1, nil)
			require.ErrorContains(t, err, "mechanism not offered")
			assert.Equal(t, "mechanism-not-offered", reasonOf(err))
		}},
		{"START with a malformed mechanism name", func(t *testing.T, c *rpc.Conn) {
			_, err := start(t, c, "plain", 1, nil)
			assert.Equal(t, "malformed", reasonOf(err))
		}},
		{"START twice: the second conversation replaces the first", func(t *testing.T, c *rpc.Conn) {
			r1, err := start(t, c, sasl.MechSCRAMSHA256, 0, []byte("n,,n=fred,r=firstnonce"))
			require.NoError(t, err)
			require.Contains(t, string(r1.Data), "r=firstnonce")
			r2, err := start(t, c, sasl.MechSCRAMSHA256, 0, []byte("n,,n=fred,r=secondnonce"))
			require.NoError(t, err)
			require.Contains(t, string(r2.Data), "r=secondnonce")
			// A final message for the first conversation's nonce fails.
			nonce := strings.TrimPrefix(strings.Split(string(r1.Data), ",")[0], "r=")
			_, err = step(t, c, 0, []byte("c=biws,r="+nonce+",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
			require.ErrorContains(t, err, "nonce")
		}},
		{"nil START data asks for the initial response", func(t *testing.T, c *rpc.Conn) {
			r, err := start(t, c, sasl.MechPlain, 1, nil)
			require.NoError(t, err)
			assert.EqualValues(t, 0, r.Complete)
			assert.EqualValues(t, 0, r.Nil, "an empty challenge, not 'no data'")
			assert.Empty(t, r.Data)
			r, err = step(t, c, 0, plainOK)
			require.NoError(t, err)
			assert.EqualValues(t, 1, r.Complete)
		}},
		{"nil set with data following", func(t *testing.T, c *rpc.Conn) {
			_, err := start(t, c, sasl.MechPlain, 1, plainOK)
			assert.Equal(t, "malformed", reasonOf(err))
		}},
		{"data of 65536 bytes decodes, 65537 does not", func(t *testing.T, c *rpc.Conn) {
			_, err := start(t, c, sasl.MechPlain, 0, make([]byte, sasl.MaxData))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "NUL separators", "decoded, refused by PLAIN")
			_, err = start(t, c, sasl.MechPlain, 0, make([]byte, sasl.MaxData+1))
			require.Error(t, err)
			assert.Equal(t, "malformed", reasonOf(err))
			assert.Contains(t, err.Error(), "AUTH_SASL_START arguments")
		}},
		{"a second authentication after success", func(t *testing.T, c *rpc.Conn) {
			_, err := start(t, c, sasl.MechPlain, 0, plainOK)
			require.NoError(t, err)
			_, err = start(t, c, sasl.MechPlain, 0, []byte("\x00mallory\x00x"))
			require.ErrorContains(t, err, "no authentication in progress")
			err = c.CallXDR(testCtx(t), authProc(sasl.ProcAuthSASLInit), nil, &sasl.SASLInitRet{})
			require.ErrorContains(t, err, "already authenticated")
			_, err = step(t, c, 0, plainOK)
			require.ErrorContains(t, err, "no authentication in progress")
			got, err := whoami(t, c)
			require.NoError(t, err)
			assert.Equal(t, user, got, "the identity stays the first one")
		}},
		{"steps after the failure limit", func(t *testing.T, c *rpc.Conn) {
			for i := range 3 {
				_, err := start(t, c, sasl.MechPlain, 0, []byte("\x00"+user+"\x00wrong"))
				require.Error(t, err, "attempt %d", i)
			}
			// Whatever still arrives before the close is refused, even the
			// right password.
			_, err := start(t, c, sasl.MechPlain, 0, plainOK)
			require.Error(t, err)
			require.ErrorIs(t, waitClosed(t, c, 5*time.Second), rpc.ErrPeerClosed)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startServer(t, fixtureOpts{})
			tc.run(t, f.dial(t, compat))
		})
	}
}

// TestClientPreferringPlainSCRAMIsNoDowngrade: a client that lists plain
// SCRAM before -PLUS, on a server offering both, chose plain SCRAM having
// seen -PLUS: its gs2 flag must be "n", not "y" ("I could bind but saw no
// -PLUS"), which the server would take for a downgrade attack.
func TestClientPreferringPlainSCRAMIsNoDowngrade(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS})
	c := f.dial(t, nil)
	id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256(creds()), sasl.SCRAMSHA256Plus(creds())}})
	require.NoError(t, err)
	assert.Equal(t, sasl.MechSCRAMSHA256, id.Mechanism)
}

// TestTransportIdentityDoesNotReplaceSASLIdentity: AUTH_LIST with
// TLSIdentity racing a SASL exchange on the same connection: whichever
// authenticates first, the identity handlers see never changes after.
func TestTransportIdentityDoesNotReplaceSASLIdentity(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t, tls.VersionTLS13)
	plainDone := make(chan struct{})
	f := startServer(t, fixtureOpts{network: "tcp", tls: srvTLS, client: cliTLS, sasl: &sasl.ServerOptions{TLSIdentity: true,
		Authorize: func(ctx context.Context, id *sasl.Identity) error {
			if id.Mechanism == sasl.MechTLS {
				select { // the TLS identity is decided while PLAIN runs
				case <-plainDone:
				case <-ctx.Done():
				}
			}
			return nil
		}}})
	c := f.dial(t, compat)
	listed := make(chan error, 1)
	go func() {
		listed <- c.CallXDR(testCtx(t), authProc(sasl.ProcAuthList), nil, &sasl.AuthListRet{})
	}()
	time.Sleep(50 * time.Millisecond) // AUTH_LIST is in Authorize
	r, err := start(t, c, sasl.MechPlain, 0, plainOK)
	require.NoError(t, err)
	require.EqualValues(t, 1, r.Complete)
	got, err := whoami(t, c)
	require.NoError(t, err)
	require.Equal(t, user, got)
	close(plainDone)
	require.NoError(t, <-listed)
	got, err = whoami(t, c)
	require.NoError(t, err)
	assert.Equal(t, user, got, "the PLAIN identity stays; the TLS one came second")
}

// TestIdentityRacesTheGate: calls sent while the exchange completes are
// either held back ("authentication required") or see the identity; none
// runs past the gate without one.
func TestIdentityRacesTheGate(t *testing.T) {
	f := startServer(t, fixtureOpts{})
	c := f.dial(t, compat)
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				got, err := whoami(t, c)
				switch {
				case err != nil && !strings.Contains(err.Error(), "authentication required"):
					errs <- err
					return
				case err == nil && got != user:
					errs <- assert.AnError
					return
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.Plain(creds())}})
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	close(stop)
	for range 4 {
		require.NoError(t, <-errs)
	}
}

// TestUserNamesWithSCRAMSpecials: ',' and '=' in a user name travel
// escaped (=2C, =3D) and are looked up as written; UTF-8 too.
func TestUserNamesWithSCRAMSpecials(t *testing.T) {
	store := &sasl.MemoryStore{}
	names := []string{"a,b=c", "José"}
	for _, n := range names {
		require.NoError(t, store.AddUser(n, password))
	}
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{Mechanisms: []sasl.ServerMechanism{sasl.SCRAMServer(store), sasl.PlainServer(store)}}})
	for _, n := range names {
		for _, m := range []sasl.ClientMechanism{sasl.SCRAMSHA256(sasl.Credentials{Username: n, Password: password}), sasl.Plain(sasl.Credentials{Username: n, Password: password})} {
			c := f.dial(t, compat)
			_, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{m}})
			require.NoError(t, err, "%s %q", m.Name(), n)
			got, err := whoami(t, c)
			require.NoError(t, err)
			assert.Equal(t, n, got)
		}
	}
}

// TestServerWithoutMechanismsSaysSo: a new user's NewServer without
// Mechanisms refuses every client, and the refusal says why.
func TestServerWithoutMechanismsSaysSo(t *testing.T) {
	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{Mechanisms: []sasl.ServerMechanism{}}})
	_, err := sasl.Authenticate(testCtx(t), f.dial(t, compat), &sasl.ClientOptions{Mechanisms: sasl.Password(creds())})
	require.ErrorIs(t, err, sasl.ErrMechanismNotOffered)
	assert.ErrorContains(t, err, "ServerOptions.Mechanisms is empty")
}
