package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/transport"
)

// The built program, as a user meets it: a bad flag, an unreachable peer,
// a refused certificate and a missing QEMU each print one clear line and
// exit non-zero.
func TestCLIFailsOnOneLine(t *testing.T) {
	bin := exampleBinary(t)
	dir := t.TempDir()
	pkiA, pkiB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{pkiA, pkiB} {
		p, err := testcert.New()
		require.NoError(t, err)
		require.NoError(t, p.WriteLibvirtDir(d))
	}
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())
	// A destination whose certificates come from another CA.
	other := otherDestination(t, pkiB)
	noQEMU := t.TempDir() // $PATH without qemu-system-x86_64

	for _, tc := range []struct {
		name string
		args []string
		path string // $PATH, if not the test's
		code int
		want string
	}{
		{"bad size", []string{"-size", "lots"}, "", 2, `invalid value "lots" for flag -size`},
		{"unknown flag", []string{"-bogus"}, "", 2, "flag provided but not defined: -bogus"},
		{"stray argument", []string{"now"}, "", 2, `unexpected argument "now"`},
		{"tcp without -insecure", []string{"-transport", "tcp"}, "", 2, "add -insecure"},
		{"unknown transport", []string{"-transport", "udp"}, "", 2, `-transport "udp": tls, tcp, unix or ssh`},
		{"unreachable peer", []string{"-connect", closed, "-pki", pkiA}, "", 1,
			"connecting to the destination at " + closed + ": "},
		{"refused certificate", []string{"-connect", other, "-pki", pkiA}, "", 1, "certificate signed by unknown authority"},
		{"missing QEMU", []string{"-qemu", "-size", "64MiB"}, noQEMU, 1, "-qemu: qemu-system-x86_64 not found"},
		{"missing QEMU at the destination", []string{"-listen", "127.0.0.1:0", "-pki", pkiA, "-qemu"}, noQEMU, 1,
			"-qemu: qemu-system-x86_64 not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			if tc.path != "" {
				cmd.Env = append(os.Environ(), "PATH="+tc.path)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "exit status; stderr:\n%s", &stderr)
			assert.Equal(t, tc.code, ee.ExitCode(), "stderr:\n%s", &stderr)
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			require.Len(t, lines, 1, "stderr:\n%s", &stderr)
			assert.True(t, strings.HasPrefix(lines[0], "migrate: "), lines[0])
			assert.Contains(t, lines[0], tc.want)
			t.Log(lines[0])
		})
	}
}

// otherDestination listens with TLS certificates of pki's CA and returns
// its address; its connections end at the handshake.
func otherDestination(t *testing.T, pki string) string {
	cfg, err := transport.LoadLibvirtServerConfig(pki)
	require.NoError(t, err)
	l, err := transport.ListenTLS(context.Background(), "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: cfg})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = transport.Handshake(context.Background(), c) // fails: the client refuses
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
	return l.Addr().String()
}

// Ctrl-C (a real SIGINT to a real process) mid-transfer cancels the
// migration cleanly on either host: both exit non-zero with one error line
// naming the phase and the cancel.
func TestCLIInterrupt(t *testing.T) {
	for _, victim := range []string{"source", "destination"} {
		t.Run("interrupt the "+victim, func(t *testing.T) {
			pki := filepath.Join(t.TempDir(), "pki")
			dst := startProc(t, "destination", "-listen", "127.0.0.1:0", "-pki", pki)
			l := dst.waitLine(func(l string) bool { return strings.HasPrefix(l, "destination listening on ") }, "its address")
			addr := strings.Fields(strings.TrimPrefix(l, "destination listening on "))[0]
			src := startProc(t, "source", "-connect", addr, "-pki", pki, "-size", "1GiB", "-limit", "20MB")
			src.waitLine(func(l string) bool { return strings.HasPrefix(l, "perform ") }, "progress")
			target := map[string]*proc{"source": src, "destination": dst}[victim]
			require.NoError(t, target.cmd.Process.Signal(syscall.SIGINT))
			for _, p := range []*proc{src, dst} {
				assert.NotEqual(t, 0, p.wait(), "%s's exit status", p.name)
				errs := p.errorLines()
				if assert.Len(t, errs, 1, "%s's error lines", p.name) {
					assert.Contains(t, errs[0], "migration failed in perform on the "+victim+": ", p.name)
					assert.Contains(t, errs[0], "cancelled", p.name)
				}
			}
		})
	}
}
