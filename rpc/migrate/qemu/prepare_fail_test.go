package qemu_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// A Prepare that fails kills the destination QEMU: no Finish follows a
// failed Prepare, so nobody else would. Here QEMU cannot listen on the
// incoming socket, whose path is too long for a unix socket. Before, the
// QEMU ran on after Prepare returned its error.
func TestFailedPrepareKillsTheDestinationQEMU(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	dst := startGuest(t, filepath.Join(dir, "dst"), filepath.Join(dir, "dst.ram"), true)
	drv := qemu.NewDestination(dst.QMP, qemu.DestinationOptions{
		Dir:  filepath.Join(dir, strings.Repeat("d", 120)),
		Kill: dst.Kill,
	})
	cookie, err := json.Marshal(map[string]any{"qemu": "7.2", "ram": guestMiB << 20, "channels": 0})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err = drv.Prepare(ctx, &migrate.Incoming{ID: "too-long", Cookie: cookie, Streams: []migrate.StreamInfo{{}}})
	require.Error(t, err)
	select {
	case <-dst.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("the destination QEMU (pid %d) still runs 10 s after its Prepare failed: %v", dst.PID(), err)
	}
}
