package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// kill -9 of either helper process mid-transfer, with real QEMU, as two
// real processes. The source guest is the test's own QEMU, attached with
// -qemu-qmp (a real source guest is not the helper's child), so that the
// test can ask it afterwards whether it still runs. The kill comes at a
// random point of the transfer: the offset is drawn from a seed printed in
// the log (VIRTRPC_TEST_SEED replays it).
//
// Asserted: the source guest keeps running; the destination QEMU is gone
// (by PID: it dies with its helper, killed or not); the surviving helper
// prints one error line naming the phase and exits non-zero. A third case
// kills a source helper that started its own (throwaway) guest: that QEMU
// dies with it, by PID.
func TestKill9MidTransfer(t *testing.T) {
	requireQEMU(t)
	if testing.Short() {
		t.Skip("real QEMU and real processes")
	}
	seed := uint64(time.Now().UnixNano() % 1e9)
	if s, err := strconv.ParseUint(os.Getenv("VIRTRPC_TEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (VIRTRPC_TEST_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const guestMiB = 128
	for _, tc := range []struct {
		victim string
		attach bool // the source helper attaches to the test's guest
	}{{"destination", true}, {"source", true}, {"source", false}} {
		victim := tc.victim
		// From the first 4 MiB to 48 MiB before the end: the progress
		// line comes once a second, and at 16 MB/s 48 MiB leave 3 s for
		// the line and the kill to land before the transfer is over.
		atMiB := 4 + rng.Int64N(guestMiB-52)
		name := "kill the " + victim
		if !tc.attach {
			name += " with the guest it started"
		}
		t.Run(name, func(t *testing.T) {
			t.Logf("kill -9 once the source has sent %d MiB", atMiB)
			dir, err := os.MkdirTemp("", "vmk") // short: unix socket paths
			require.NoError(t, err)
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			var guest *qemu.Process
			attach := filepath.Join(dir, "attach.sock")
			if tc.attach {
				require.NoError(t, randomFile(filepath.Join(dir, "src.ram"), guestMiB<<20, seed))
				// A second QMP monitor for the helper: one takes one client.
				guest, err = startGuest(testCtx(t), dir, "src", guestMiB, false, "-qmp", "unix:"+attach+",server=on,wait=off")
				require.NoError(t, err)
				t.Cleanup(func() { _ = guest.Kill() })
			}

			pki := filepath.Join(dir, "pki")
			dst := startProc(t, "destination", "-listen", "127.0.0.1:0", "-pki", pki, "-qemu")
			l := dst.waitLine(func(l string) bool { return strings.HasPrefix(l, "destination listening on ") }, "its address")
			addr := strings.Fields(strings.TrimPrefix(l, "destination listening on "))[0]
			args := []string{"-connect", addr, "-pki", pki, "-limit", "16MB", "-qemu-qmp", attach}
			if !tc.attach {
				args = append(args[:len(args)-2], "-qemu", "-size", fmt.Sprint(guestMiB<<20))
			}
			src := startProc(t, "source", args...)
			srcQEMU := 0
			if !tc.attach {
				l := src.waitLine(func(l string) bool { return strings.HasPrefix(l, "qemu      source pid ") }, "its QEMU's pid")
				srcQEMU, err = strconv.Atoi(strings.Fields(strings.TrimPrefix(l, "qemu      source pid "))[0])
				require.NoError(t, err)
			}
			l = dst.waitLine(func(l string) bool { return strings.HasPrefix(l, "qemu      destination pid ") }, "its QEMU's pid")
			dstQEMU, err := strconv.Atoi(strings.Fields(strings.TrimPrefix(l, "qemu      destination pid "))[0])
			require.NoError(t, err)
			src.waitLine(func(l string) bool {
				var sent float64
				_, err := fmt.Sscanf(l, "perform %f/", &sent)
				return err == nil && sent >= float64(atMiB)
			}, fmt.Sprintf("progress past %d MiB", atMiB))

			killed, survivor := dst, src
			if victim == "source" {
				killed, survivor = src, dst
			}
			require.NoError(t, killed.cmd.Process.Signal(syscall.SIGKILL))
			killed.wait()

			code := survivor.wait()
			assert.NotEqual(t, 0, code, "the surviving %s's exit status", survivor.name)
			errs := survivor.errorLines()
			if assert.Len(t, errs, 1, "the surviving %s's error lines", survivor.name) {
				assert.Contains(t, errs[0], "migration failed in perform on the ")
				assert.Contains(t, errs[0], "lost", "names the connection lost")
			}
			requireGone(t, dstQEMU, "the destination QEMU")
			if !tc.attach {
				// A guest the helper started is its child and dies with it
				// (Pdeathsig): the throwaway demo guest. A real source
				// guest is attached, as in the other cases.
				requireGone(t, srcQEMU, "the source QEMU the killed helper started")
				return
			}
			st, err := guest.QMP.QueryStatus(testCtx(t))
			require.NoError(t, err)
			assert.Equal(t, "running", st, "the source guest")
			if victim == "destination" {
				assert.Contains(t, src.output(), "confirm   guest-01 keeps running on the source (QEMU status running)")
			}
		})
	}
}
