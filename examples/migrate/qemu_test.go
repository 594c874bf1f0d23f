package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
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
			addr := make(chan string, 1)
			dcfg := config{listen: "127.0.0.1:0", pki: pki, compat: compat, qemu: true, ready: func(a string) { addr <- a }}
			var dout bytes.Buffer
			dstErr := make(chan error, 1)
			go func() { dstErr <- run(context.Background(), dcfg, &dout, io.Discard) }()
			var a string
			select {
			case a = <-addr:
			case err := <-dstErr:
				t.Fatalf("destination: %v\n%s", err, &dout)
			}
			var sout bytes.Buffer
			scfg := config{connect: a, pki: pki, compat: compat, qemu: true, multifd: 2, size: 64 << 20, seed: 9, quiet: true}
			if err := run(context.Background(), scfg, &sout, io.Discard); err != nil {
				t.Fatalf("source: %v\n%s", err, &sout)
			}
			if err := <-dstErr; err != nil {
				t.Fatalf("destination: %v\n%s", err, &dout)
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
					t.Errorf("destination's stdout lacks %q:\n%s", want, &dout)
				}
			}
			t.Log("\n" + sout.String() + dout.String())
		})
	}
}
