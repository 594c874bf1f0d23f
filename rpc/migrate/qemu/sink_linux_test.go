package qemu

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The connection to QEMU's incoming socket gets a large send buffer (as
// large as net.core.wmem_max lets), so the data queued for QEMU lasts
// between its reads and this side wakes less often.
func TestSinkSocketHasALargeSendBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	cs := &channels{}
	defer cs.closeAll()
	l := &lazySink{chans: cs, path: path}
	require.NoError(t, l.dial(t.Context()))
	rc, err := cs.conns[0].(*net.UnixConn).SyscallConn()
	require.NoError(t, err)
	var got int
	require.NoError(t, rc.Control(func(fd uintptr) { got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }))
	require.NoError(t, err)
	want := 2 * sinkBuffer // Linux doubles what is asked, for its bookkeeping
	if b, err := os.ReadFile("/proc/sys/net/core/wmem_max"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			want = min(want, 2*max)
		}
	}
	assert.Equal(t, want, got)
}
