package rpc_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

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

var (
	echoProc   = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 1}
	uploadProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 2}
)

// pattern is an endless source of a fixed pseudo-random pattern that costs
// one memmove per byte, so benchmarks measure the transport, not the source.
type pattern struct{ off int }

var patternBuf = func() []byte {
	b := make([]byte, 1<<20)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k := copy(b[n:], patternBuf[p.off:])
		n += k
		p.off = (p.off + k) % len(patternBuf)
	}
	return n, nil
}

// verifyNoLeak is goleak.VerifyNone with a longer patience: goroutines of a
// closed connection may take more than goleak's ~0.4 s to end on a loaded
// machine; a real leak still fails, after 10 s.
func verifyNoLeak(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Error(err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
