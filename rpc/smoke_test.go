package rpc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"

	"crypto/tls"
	"github.com/stretchr/testify/require"
	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
)

var echoProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 1}
var uploadProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 2}
var downloadProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 3}

func TestSmoke(t *testing.T) {
	pki, err := testcert.New()
	require.NoError(t, err)
	l, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	require.NoError(t, err)
	mux := rpc.NewMux()
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return req.Payload, nil })
	sums := make(chan [32]byte, 1)
	mux.Handle(uploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(nil)
		if err != nil {
			return nil, err
		}
		go func() {
			h := sha256.New()
			_, err := io.Copy(h, st)
			if err != nil {
				t.Error(err)
			}
			st.Close()
			var s [32]byte
			copy(s[:], h.Sum(nil))
			sums <- s
		}()
		return nil, nil
	})
	const size = 256 << 20
	mux.Handle(downloadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(nil)
		if err != nil {
			return nil, err
		}
		go func() {
			io.Copy(st, io.LimitReader(&pattern{}, size))
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		}()
		return nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	go func() { done <- rpc.Serve(ctx, l, &rpc.Options{Handlers: mux}, nil) }()
	nc, err := tls.Dial("tcp", l.Addr().String(), pki.ClientConfig())
	require.NoError(t, err)
	c, err := rpc.Client(ctx, nc, nil)
	require.NoError(t, err)
	require.Equal(t, rpc.ModeNative, c.Mode())
	out, err := c.Call(ctx, echoProc, []byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(out))

	st, _, err := c.OpenStream(ctx, uploadProc, nil, nil)
	require.NoError(t, err)
	h := sha256.New()
	n, err := io.Copy(st, io.TeeReader(io.LimitReader(&pattern{}, size), h))
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	require.NoError(t, st.Close())
	got := <-sums
	require.True(t, bytes.Equal(got[:], h.Sum(nil)))

	st, _, err = c.OpenStream(ctx, downloadProc, nil, nil)
	require.NoError(t, err)
	n, err = io.Copy(io.Discard, st)
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	require.NoError(t, st.Close())
	t.Logf("%+v", c.Stats())
	require.NoError(t, c.Close())
	cancel()
	<-done
	_ = net.ErrClosed
}

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
