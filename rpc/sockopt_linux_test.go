package rpc_test

import (
	"context"
	"go/parser"
	"go/token"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
)

func notSentLowat(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var got int
	var gerr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 25) // TCP_NOTSENT_LOWAT
	}))
	require.NoError(t, gerr)
	return got
}

// Socket tuning belongs to transport: a connection keeps the
// TCP_NOTSENT_LOWAT its dialer or listener set (rpc once reset both ends to
// 32 KiB).
func TestConnLeavesSocketOptionsAlone(t *testing.T) {
	l, err := transport.ListenTCP(context.Background(), "127.0.0.1:0", &transport.TCPOptions{NotSentLowat: 64 << 10})
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() { nc, _ := l.Accept(); accepted <- nc }()
	a, err := transport.DialTCP(context.Background(), l.Addr().String(), &transport.TCPOptions{NotSentLowat: 128 << 10})
	require.NoError(t, err)
	b := <-accepted
	require.NotNil(t, b)
	srv := rpc.Server(b, nil)
	defer srv.Close()
	c, err := rpc.Client(context.Background(), a, nil)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 128<<10, notSentLowat(t, a))
	assert.Equal(t, 64<<10, notSentLowat(t, b))
}

// The rpc package does not import transport (its tests may).
func TestRPCDoesNotImportTransport(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range ast.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			assert.NotEqual(t, "github.com/virtrpc/virtrpc/transport", path, "%s imports transport", f)
		}
	}
}
