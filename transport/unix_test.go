package transport_test

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

func TestUnixRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "virtrpc.sock")
	ln, err := transport.ListenUnix(ctx, path)
	require.NoError(t, err)
	serve(t, ln, echo)

	c, err := transport.DialUnix(ctx, path)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "hello over unix")
}

func TestListenUnixRemovesStaleSocket(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "stale.sock")

	// Leave a socket file behind with nobody listening, as a crash would.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	old.SetUnlinkOnClose(false)
	require.NoError(t, old.Close())
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket, fi.Mode().Type())

	ln, err := transport.ListenUnix(ctx, path)
	require.NoError(t, err)
	serve(t, ln, echo)
	c, err := transport.DialUnix(ctx, path)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "took over the stale path")
}

func TestListenUnixRefusesLiveListener(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "live.sock")
	live, err := transport.ListenUnix(ctx, path)
	require.NoError(t, err)
	serve(t, live, echo)

	_, err = transport.ListenUnix(ctx, path)
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	assert.ErrorContains(t, err, "live")

	// The live listener keeps its socket file and keeps serving.
	c, err := transport.DialUnix(ctx, path)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "still here")
}

func TestListenUnixKeepsNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-a-socket")
	require.NoError(t, os.WriteFile(path, []byte("precious"), 0o600))

	_, err := transport.ListenUnix(testCtx(t), path)
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "precious", string(data))
}

func TestDialUnixMissing(t *testing.T) {
	_, err := transport.DialUnix(testCtx(t), filepath.Join(t.TempDir(), "nobody"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
