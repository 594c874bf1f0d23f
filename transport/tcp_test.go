package transport_test

import (
	"context"
	"errors"
	"math"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

func TestTuneIgnoresNonTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	assert.NoError(t, transport.Tune(a, nil))

	ctx := testCtx(t)
	ln, err := transport.ListenUnix(ctx, filepath.Join(t.TempDir(), "sock"))
	require.NoError(t, err)
	serve(t, ln, echo)
	c, err := transport.DialUnix(ctx, ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	assert.NoError(t, transport.Tune(c, &transport.TCPOptions{NotSentLowat: 1}))

	err = transport.SetNotSentLowat(c, 1)
	assert.ErrorIs(t, err, errors.ErrUnsupported)
}

func TestSetNotSentLowatRange(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tooBig := int64(math.MaxInt32) + 1 // a variable: the constant would not compile on 32-bit
	for _, n := range []int{-1, int(tooBig)} {
		err := transport.SetNotSentLowat(a, n)
		assert.ErrorContains(t, err, "out of range", n)
	}
	ctx := testCtx(t)
	_, err := transport.ListenTCP(ctx, "127.0.0.1:0", &transport.TCPOptions{NotSentLowat: int(tooBig)})
	assert.ErrorContains(t, err, "out of range")
}

func TestListenTCPAcceptAfterClose(t *testing.T) {
	ln, err := transport.ListenTCP(testCtx(t), "127.0.0.1:0", nil)
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	_, err = ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	var opErr *net.OpError
	assert.True(t, errors.As(err, &opErr), "Accept errors stay unwrapped: %T", err)
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDialTCPErrors(t *testing.T) {
	_, err := transport.DialTCP(testCtx(t), freeAddr(t), nil)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = transport.DialTCP(ctx, freeAddr(t), nil)
	assert.ErrorIs(t, err, context.Canceled)
}
