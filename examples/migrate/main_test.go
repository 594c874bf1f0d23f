package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" { // the example binary of proc_test.go
		_ = os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const testSize = 32 << 20

func TestRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cfg := config{size: testSize, seed: 7, baseline: true}
	if err := run(context.Background(), cfg, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s", err, &stdout)
	}
	out := stdout.String()
	for _, want := range []string{
		"native mode",
		"destination verified sha256",
		"virtrpc stream  33554432 bytes",
		"plain TLS       33554432 bytes",
		"MB/s  (control call p50",
		"of plain TLS; destination verified sha256",
		"\nverified: 33554432 bytes, ",
		" MB/s through virtrpc over TLS, plain TLS ",
		" MB/s in the same run, ratio ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	// stderr is no terminal: whole lines, never redrawn in place.
	if !strings.Contains(stderr.String(), "perform ") || !strings.Contains(stderr.String(), "100.0%") {
		t.Errorf("no progress line on stderr: %q", stderr.String())
	}
	if strings.Contains(stderr.String(), "\r") {
		t.Errorf("progress redrawn in place on a non-terminal: %q", stderr.String())
	}
	t.Log("\n" + out)
}

// -qemu -multifd 2: a real QEMU guest migrates through the tunnel, its
// memory compared on both paused sides, the destination left running.
func TestRunQEMU(t *testing.T) {
	requireQEMU(t)
	var stdout bytes.Buffer
	cfg := config{size: 128 << 20, seed: 5, qemu: true, multifd: 2, baseline: true, quiet: true}
	if err := run(context.Background(), cfg, &stdout, io.Discard); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s", err, &stdout)
	}
	out := stdout.String()
	for _, want := range []string{
		"3 streams (main + 2 multifd)", "live: true",
		"guest RAM identical on both paused sides", "destination running", "\nverified: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	t.Log("\n" + out)
}

func TestRunCompat(t *testing.T) {
	var stdout bytes.Buffer
	cfg := config{size: testSize, seed: 3, compat: true, quiet: true}
	if err := run(context.Background(), cfg, &stdout, io.Discard); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s", err, &stdout)
	}
	out := stdout.String()
	for _, want := range []string{"compat mode", "virtrpc stream  33554432 bytes", "destination verified sha256"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "plain TLS ") {
		t.Errorf("baseline ran although disabled:\n%s", out)
	}
}

// A byte corrupted on the way must fail Finish: the destination's digest
// differs from the source's.
func TestRunCorruptedByte(t *testing.T) {
	const at = 5<<20 + 123
	cfg := config{size: testSize, seed: 1, baseline: true, quiet: true}
	cfg.tamper = func(off int64, p []byte) []byte {
		if off <= at && at < off+int64(len(p)) {
			p = bytes.Clone(p)
			p[at-off] ^= 0x20
		}
		return p
	}
	var stdout bytes.Buffer
	err := run(context.Background(), cfg, &stdout, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("run = %v, want a sha256 mismatch\nstdout:\n%s", err, &stdout)
	}
	if strings.Contains(stdout.String(), "verified") {
		t.Errorf("reported verified:\n%s", &stdout)
	}
}

// Cancelling mid-stream (Ctrl-C) aborts the migration with an error and
// leaves nothing running.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stop := errors.New("interrupt")
	cfg := config{size: 1 << 40, seed: 1, quiet: true}
	cfg.tamper = func(off int64, p []byte) []byte {
		if off >= 8<<20 {
			cancel(stop)
		}
		return p
	}
	err := run(ctx, cfg, io.Discard, io.Discard)
	if !errors.Is(err, stop) {
		t.Fatalf("run = %v, want the cancellation", err)
	}
}

func TestGuestMem(t *testing.T) {
	const size = 4<<20 + 100 // not a whole number of pages
	image := func(seed uint64, bufSize int) []byte {
		g, buf := newGuestMem(size, seed), make([]byte, bufSize)
		var all []byte
		for {
			n, err := g.Read(buf)
			all = append(all, buf[:n]...)
			if err == io.EOF {
				return all
			}
		}
	}
	a := image(42, 65508) // a stream chunk: reads straddle pages
	if len(a) != size {
		t.Fatalf("read %d bytes, want %d", len(a), size)
	}
	if !bytes.Equal(a, image(42, 4096)) || !bytes.Equal(a, image(42, 1000)) {
		t.Error("contents depend on the read size")
	}
	if bytes.Equal(a, image(43, 65508)) {
		t.Error("seed 43 gives seed 42's image")
	}
	zero, pages := 0, size/pageSize
	for p := 0; p < pages*pageSize; p += pageSize {
		if bytes.Count(a[p:p+pageSize], []byte{0}) == pageSize {
			zero++
		}
	}
	if zero < pages/5 || zero > pages/3 {
		t.Errorf("%d zero pages of %d, want about a quarter", zero, pages)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1GiB": 1 << 30, "256MiB": 256 << 20, "4GiB": 4 << 30, "4G": 4 << 30,
		"512KiB": 512 << 10, "1073741824": 1 << 30, "500MB": 500e6, "1.5GiB": 3 << 29,
	} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1GiB", "lots", "1XB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
}

func BenchmarkGuestMem(b *testing.B) {
	buf := make([]byte, 65508)
	g := newGuestMem(1<<62, 1)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_, _ = g.Read(buf)
	}
}

// -listen and -connect: the destination and the source as two separate
// hosts (here two goroutines of the test, each with only its own side),
// sharing a PKI directory the destination wrote; in native and compat mode.
func TestRunTwoHosts(t *testing.T) {
	for _, compat := range []bool{false, true} {
		t.Run(map[bool]string{false: "native", true: "compat"}[compat], func(t *testing.T) {
			pki := t.TempDir()
			a, dout, dstErr := startDestination(t, config{listen: "127.0.0.1:0", pki: pki, compat: compat})
			var sout bytes.Buffer
			scfg := config{connect: a, pki: pki, compat: compat, size: testSize, seed: 4, quiet: true}
			if err := run(context.Background(), scfg, &sout, io.Discard); err != nil {
				t.Fatalf("source: %v\n%s", err, &sout)
			}
			if err := <-dstErr; err != nil {
				t.Fatalf("destination: %v\n%s", err, dout)
			}
			mode := map[bool]string{false: "native mode", true: "compat mode"}[compat]
			for _, want := range []string{mode, "destination verified sha256", "\nverified: 33554432 bytes, "} {
				if !strings.Contains(sout.String(), want) {
					t.Errorf("source's stdout lacks %q:\n%s", want, &sout)
				}
			}
			for _, want := range []string{"wrote a throwaway PKI", "migrated in and running here"} {
				if !strings.Contains(dout.String(), want) {
					t.Errorf("destination's stdout lacks %q:\n%s", want, dout)
				}
			}
		})
	}
}

// -bench: one round of every method on a small guest.
func TestRunBench(t *testing.T) {
	if testing.Short() {
		t.Skip("five real-QEMU migrations")
	}
	requireQEMU(t)
	var stdout bytes.Buffer
	if err := run(context.Background(), config{size: 64 << 20, seed: 2, bench: 1, quiet: true}, &stdout, io.Discard); err != nil {
		t.Fatalf("run: %v\n%s", err, &stdout)
	}
	for _, want := range []string{"QEMU→QEMU, unix socket", "QEMU's own TLS", "virtrpc tunnel, TLS, multifd 4", "× TCP"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, &stdout)
		}
	}
	t.Log("\n" + stdout.String())
}

// startDestination runs a destination host (cfg.listen set) on a goroutine
// and returns its address once it listens, its stdout (read it only after
// its end) and its end.
func startDestination(t *testing.T, cfg config) (addr string, out *bytes.Buffer, end chan error) {
	t.Helper()
	ready := make(chan string, 1)
	cfg.ready = func(a string) { ready <- a }
	out, end = &bytes.Buffer{}, make(chan error, 1)
	go func() { end <- run(context.Background(), cfg, out, io.Discard) }()
	select {
	case addr = <-ready:
	case err := <-end:
		t.Fatalf("destination: %v\n%s", err, out)
	}
	return addr, out, end
}
