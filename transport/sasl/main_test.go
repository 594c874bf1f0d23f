package sasl_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newPKI(t testing.TB) *testcert.PKI {
	t.Helper()
	p, err := testcert.New()
	require.NoError(t, err)
	return p
}

// echoProc is a procedure behind the auth gate: it answers with the name
// of the authenticated user, and counts its runs.
var echoProc = rpc.Procedure{Prog: 0x20008086, Vers: 1, Proc: 59} // CONNECT_GET_HOSTNAME's number

// pingProc answers with nothing; the open-server benchmark calls it.
var pingProc = rpc.Procedure{Prog: 0x20008086, Vers: 1, Proc: 1000}

// fixture is a virtrpc server authenticating with SASL.
type fixture struct {
	network, addr string
	tlsClient     *tls.Config // nil: no TLS
	store         *sasl.MemoryStore
	calls         atomic.Int32 // runs of echoProc's handler
}

const (
	user     = "fred"
	password = "secret123"
)

// server options for the fixture
type fixtureOpts struct {
	network string // "unix" (default), "tcp"
	tls     *tls.Config
	client  *tls.Config
	sasl    *sasl.ServerOptions // Mechanisms default to SCRAM-PLUS, SCRAM, PLAIN, EXTERNAL over the store
	rpc     *rpc.Options
	// extra registers more handlers; libvirtAck sends libvirt's TLS
	// acknowledgement byte (for virsh).
	extra      func(*rpc.Mux)
	libvirtAck bool
	noGate     bool // no auth gate: every call is served (benchmarks)
}

func startServer(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{store: &sasl.MemoryStore{}, tlsClient: o.client}
	require.NoError(t, f.store.AddUser(user, password))
	so := sasl.ServerOptions{}
	if o.sasl != nil {
		so = *o.sasl
	}
	if so.FailureDelay == 0 {
		so.FailureDelay = -1 // tests that fail often; TestFailureDelay sets one
	}
	if so.Mechanisms == nil {
		so.Mechanisms = []sasl.ServerMechanism{sasl.SCRAMPlusServer(f.store), sasl.SCRAMServer(f.store), sasl.PlainServer(f.store), sasl.ExternalServer()}
	}
	if o.tls != nil && so.ServerCertificate == nil && len(o.tls.Certificates) > 0 {
		so.ServerCertificate = o.tls.Certificates[0].Leaf
	}
	srv := sasl.NewServer(&so)
	mux := rpc.NewMux()
	srv.Register(mux)
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		f.calls.Add(1)
		id := sasl.IdentityOf(req.Conn())
		if id == nil {
			return nil, errors.New("no identity")
		}
		return []byte(id.Username), nil
	})
	if o.extra != nil {
		o.extra(mux)
	}
	ro := rpc.Options{}
	if o.rpc != nil {
		ro = *o.rpc
	}
	mux.Handle(pingProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return nil, nil })
	ro.Handlers = mux
	if !o.noGate {
		ro.Auth = srv.Gate()
	}
	f.network = o.network
	if f.network == "" {
		f.network = "unix"
	}
	ctx, cancel := context.WithCancel(context.Background())
	var ln net.Listener
	var err error
	addr := "127.0.0.1:0"
	if f.network == "unix" {
		addr = filepath.Join(shortDir(t), "s")
	}
	if o.tls != nil {
		ln, err = transport.ListenTLS(ctx, f.network, addr, &transport.TLSOptions{Config: o.tls, LibvirtAck: o.libvirtAck})
	} else if f.network == "unix" {
		ln, err = transport.ListenUnix(ctx, addr)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	require.NoError(t, err)
	f.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = rpc.Serve(ctx, ln, &ro, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// shortDir is a directory for unix sockets (t.TempDir paths can pass the
// 108-byte limit).
func shortDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "sasl-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// dial connects an rpc client to f (compat mode unless opts say otherwise).
func (f *fixture) dial(t testing.TB, opts *rpc.Options) *rpc.Conn {
	t.Helper()
	c, err := f.tryDial(t, opts)
	require.NoError(t, err)
	return c
}

func (f *fixture) tryDial(t testing.TB, opts *rpc.Options) (*rpc.Conn, error) {
	ctx := testCtx(t)
	var nc net.Conn
	var err error
	if f.tlsClient != nil {
		nc, err = transport.DialTLS(ctx, f.network, f.addr, &transport.TLSOptions{Config: f.tlsClient})
	} else {
		var d net.Dialer
		nc, err = d.DialContext(ctx, f.network, f.addr)
	}
	if err != nil {
		return nil, err
	}
	c, err := rpc.Client(ctx, nc, opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, nil
}

func creds() sasl.Credentials { return sasl.Credentials{Username: user, Password: password} }

// whoami calls echoProc and returns the user name the server saw.
func whoami(t testing.TB, c *rpc.Conn) (string, error) {
	b, err := c.Call(testCtx(t), echoProc, nil)
	return string(b), err
}

// waitClosed waits for c to be closed (by the server), failing after d.
func waitClosed(t *testing.T, c *rpc.Conn, d time.Duration) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(d):
		t.Fatalf("connection still open after %v", d)
		return nil
	}
}
