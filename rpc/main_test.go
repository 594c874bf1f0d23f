package rpc_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	pkiOnce sync.Once
	pkiVal  *testcert.PKI
)

func testPKI(t testing.TB) *testcert.PKI {
	pkiOnce.Do(func() {
		var err error
		pkiVal, err = testcert.New()
		if err != nil {
			panic(err)
		}
	})
	return pkiVal
}

// pair connects a client and a server over TLS 1.3 on loopback and closes
// both at the end of the test.
func pair(t *testing.T, clientOpts, serverOpts *rpc.Options) (*rpc.Conn, *rpc.Conn) {
	t.Helper()
	cc, sc := tlsPair(t, testPKI(t))
	srv := rpc.Server(sc, serverOpts)
	t.Cleanup(func() { _ = srv.Close() })
	c, err := rpc.Client(context.Background(), cc, clientOpts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, srv
}

// rawPair returns a client rpc.Conn whose peer is a raw net.Conn the test
// drives frame by frame.
func rawServer(t *testing.T, serverOpts *rpc.Options) (*rpc.Conn, net.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	srv := rpc.Server(b, serverOpts)
	t.Cleanup(func() { _ = srv.Close(); _ = a.Close() })
	return srv, a
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	b := <-ch
	require.NotNil(t, b)
	return a, b
}

var _ = tls.VersionTLS13
