package rpc_test

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
)

func TestConnSetsNotSentLowat(t *testing.T) {
	a, b := tcpPair(t)
	srv := rpc.Server(b, nil)
	defer srv.Close()
	c, err := rpc.Client(context.Background(), a, &rpc.Options{NotSentLowat: 48 << 10})
	require.NoError(t, err)
	defer c.Close()
	for _, tc := range []struct {
		conn net.Conn
		want int
	}{{a, 48 << 10}, {b, 32 << 10}} {
		raw, err := tc.conn.(*net.TCPConn).SyscallConn()
		require.NoError(t, err)
		var got int
		var gerr error
		require.NoError(t, raw.Control(func(fd uintptr) {
			got, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 25) // TCP_NOTSENT_LOWAT
		}))
		require.NoError(t, gerr)
		assert.Equal(t, tc.want, got)
	}
}
