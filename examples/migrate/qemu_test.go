package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// requireQEMU skips without qemu-system-x86_64, or fails when
// VIRTRPC_REQUIRE_PEERS=1 (CI).
func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("VIRTRPC_REQUIRE_PEERS") == "1" {
			t.Fatal("qemu-system-x86_64 is not installed and VIRTRPC_REQUIRE_PEERS=1")
		}
		t.Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
	}
}

// -listen ADDR -qemu and -connect ADDR -qemu: the destination host starts
// its QEMU in Prepare, the source host its guest; the source's digest of
// its paused RAM travels in the Perform cookie and the destination compares
// its own before it resumes. Two endpoints on goroutines, real TLS on
// 127.0.0.1, native and compat.
func TestRunTwoHostsQEMU(t *testing.T) {
	requireQEMU(t)
	for _, compat := range []bool{false, true} {
		t.Run(map[bool]string{false: "native", true: "compat"}[compat], func(t *testing.T) {
			pki := t.TempDir()
			a, dout, dstErr := startDestination(t, config{listen: "127.0.0.1:0", pki: pki, compat: compat, qemu: true})
			var sout bytes.Buffer
			scfg := config{connect: a, pki: pki, compat: compat, qemu: true, multifd: 2, size: 64 << 20, seed: 9, quiet: true}
			if err := run(context.Background(), scfg, &sout, io.Discard); err != nil {
				t.Fatalf("source: %v\n%s", err, &sout)
			}
			if err := <-dstErr; err != nil {
				t.Fatalf("destination: %v\n%s", err, dout)
			}
			mode := map[bool]string{false: "native mode", true: "compat mode"}[compat]
			for _, want := range []string{mode, "3 streams (main + 2 multifd)", "live: true",
				"guest RAM identical on both paused sides", "destination running", "\nverified: "} {
				if !strings.Contains(sout.String(), want) {
					t.Errorf("source's stdout lacks %q:\n%s", want, &sout)
				}
			}
			for _, want := range []string{"destination pid", "guest RAM identical to the source's on both paused sides", "migrated in and running here"} {
				if !strings.Contains(dout.String(), want) {
					t.Errorf("destination's stdout lacks %q:\n%s", want, dout)
				}
			}
			t.Log("\n" + sout.String() + dout.String())
		})
	}
}

// A guest whose memory differs on the paused sides (one byte of the
// destination's RAM file changed after its incoming migration completed)
// fails Finish on the destination: the destination QEMU is killed and the
// source guest keeps running.
func TestRunQEMUMemoryDiffers(t *testing.T) {
	requireQEMU(t)
	var stdout bytes.Buffer
	cfg := config{size: 64 << 20, seed: 3, qemu: true, quiet: true}
	cfg.corruptRAM = func(path string) error {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		b := make([]byte, 1)
		const at = 5<<20 + 77
		if _, err := f.ReadAt(b, at); err != nil {
			return err
		}
		b[0] ^= 0x40
		_, err = f.WriteAt(b, at) // the file is QEMU's RAM (share=on)
		return err
	}
	err := run(context.Background(), cfg, &stdout, io.Discard)
	var me *migrate.Error
	require.ErrorAs(t, err, &me, "stdout:\n%s", &stdout)
	assert.Equal(t, migrate.Finish, me.Phase, "%v", err)
	assert.Equal(t, migrate.Destination, me.Side, "%v", err)
	assert.Contains(t, err.Error(), "guest memory differs on the paused sides: source sha256 ")
	assert.Contains(t, stdout.String(), "confirm   guest-01 keeps running on the source (QEMU status running)")
	assert.NotContains(t, stdout.String(), "verified")
	pid := qemuPID(t, stdout.String(), "qemu      destination pid ")
	requireGone(t, pid, "the destination QEMU")
	t.Logf("%v\n%s", err, &stdout)
}

// qemuPID is the pid on the line of out that begins with prefix.
func qemuPID(t *testing.T, out, prefix string) int {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			pid, err := strconv.Atoi(strings.Fields(strings.TrimPrefix(l, prefix))[0])
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatalf("no %q line in:\n%s", prefix, out)
	return 0
}
