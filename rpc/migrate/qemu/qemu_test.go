package qemu_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
	"github.com/virtrpc/virtrpc/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// requireQEMU skips the test when QEMU is not installed, unless
// VIRTRPC_REQUIRE_PEERS=1 (CI), where it fails.
func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		if os.Getenv("VIRTRPC_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is not installed and VIRTRPC_REQUIRE_PEERS=1: apt-get install qemu-system-x86", qemu.DefaultBinary)
		}
		t.Skipf("%s is not installed (apt-get install qemu-system-x86); set VIRTRPC_REQUIRE_PEERS=1 to fail instead", qemu.DefaultBinary)
	}
}

const guestMiB = 256

// startGuest starts a TCG guest of guestMiB MiB whose RAM is the file mem;
// incoming starts it paused, waiting for a migration. It is killed by PID
// at the end of the test.
func startGuest(t *testing.T, dir, mem string, incoming bool) *qemu.Process {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	args := []string{
		"-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-m", fmt.Sprint(guestMiB),
		"-nographic", "-nodefaults",
		"-object", fmt.Sprintf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on", guestMiB, mem),
	}
	if incoming {
		args = append(args, "-S", "-incoming", "defer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := qemu.Start(ctx, qemu.ProcessOptions{Args: args, Dir: dir, Stderr: &testWriter{t: t}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Kill() })
	return p
}

// shortTempDir is a temporary directory whose path is short enough for
// unix sockets (108 bytes) and free of QEMU's option separators.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vq")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("qemu: %s", p)
	return len(p), nil
}

// prefill writes the guest RAM file with a random pattern.
func prefill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{42})
	buf := make([]byte, 1<<20)
	for range guestMiB {
		_, _ = rng.Read(buf)
		_, err := f.Write(buf)
		require.NoError(t, err)
	}
}

// pmemsave dumps the guest's memory and returns its sha256.
func pmemsave(ctx context.Context, t *testing.T, qmp *qemu.Client, path string) [32]byte {
	t.Helper()
	require.NoError(t, qmp.Execute(ctx, "pmemsave", map[string]any{"val": 0, "size": guestMiB << 20, "filename": path}, nil))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, b, guestMiB<<20)
	require.NoError(t, os.Remove(path))
	return sha256.Sum256(b)
}

// tlsLink connects a source rpc.Conn to a destination serving mux, over
// TLS 1.3 on loopback.
func tlsLink(t *testing.T, mux *rpc.Mux) *rpc.Conn {
	t.Helper()
	pki, err := testcert.New()
	require.NoError(t, err)
	ctx := context.Background()
	l, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: pki.ServerConfig()})
	require.NoError(t, err)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			if hs, ok := c.(interface{ HandshakeContext(context.Context) error }); ok && hs.HandshakeContext(ctx) != nil {
				_ = c.Close()
				c = nil
			}
		}
		accepted <- c
	}()
	cc, err := transport.DialTLS(ctx, "tcp", l.Addr().String(), &transport.TLSOptions{Config: pki.ClientConfig()})
	require.NoError(t, err)
	sc := <-accepted
	require.NoError(t, l.Close())
	require.NotNil(t, sc)
	dst := rpc.Server(sc, &rpc.Options{Handlers: mux})
	src, err := rpc.Client(ctx, cc, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close(); _ = dst.Close() })
	return src
}

// A 256 MiB guest with a random RAM pattern migrates live through the
// tunnel over TLS, with one channel and with 4 multifd channels: the
// destination ends running, and the guest's memory on both paused sides
// is identical.
func TestQEMUMigratesThroughTheTunnel(t *testing.T) {
	requireQEMU(t)
	for _, channels := range []int{0, 4} {
		name := "one channel"
		if channels > 0 {
			name = fmt.Sprintf("multifd %d", channels)
		}
		t.Run(name, func(t *testing.T) {
			dir := shortTempDir(t) // unix socket paths are short
			srcMem, dstMem := filepath.Join(dir, "src.ram"), filepath.Join(dir, "dst.ram")
			prefill(t, srcMem)
			src := startGuest(t, filepath.Join(dir, "src"), srcMem, false)
			dst := startGuest(t, filepath.Join(dir, "dst"), dstMem, true)
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(envInt("QTIMEOUT", 120))*time.Second)
			defer cancel()
			defer func() {
				if t.Failed() {
					for name, p := range map[string]*qemu.Process{"source": src, "destination": dst} {
						mi, err := p.QMP.QueryMigrate(context.Background())
						t.Logf("%s QEMU: query-migrate %+v %v", name, mi, err)
					}
				}
			}()

			var dstSum [32]byte
			dstDrv := qemu.NewDestination(dst.QMP, qemu.DestinationOptions{
				Dir:  filepath.Join(dir, "dst"),
				Kill: dst.Kill,
				BeforeResume: func(ctx context.Context) error {
					dstSum = pmemsave(ctx, t, dst.QMP, filepath.Join(dir, "dst.pmem"))
					return nil
				},
			})
			rcv := migrate.NewReceiver(dstDrv, nil)
			defer rcv.Close()
			mux := rpc.NewMux()
			rcv.Register(mux)
			conn := tlsLink(t, mux)

			var statuses []qemu.MigrationInfo
			srcDrv := qemu.NewSource(src.QMP, qemu.SourceOptions{
				Dir: filepath.Join(dir, "src"), Channels: channels,
				OnStatus: func(mi qemu.MigrationInfo) { statuses = append(statuses, mi) },
			})
			out := migrate.NewOutgoing(conn, srcDrv, nil)
			live := watchLive(t, src.QMP)
			start := time.Now()
			require.NoError(t, out.Run(ctx))
			wall := time.Since(start)
			assert.True(t, live(), "no sample saw the source guest running while QEMU's migration was active")

			p := out.Progress()
			require.Len(t, p.Streams, 1+channels)
			srcSum := pmemsave(ctx, t, src.QMP, filepath.Join(dir, "src.pmem"))
			assert.Equal(t, srcSum, dstSum, "guest memory differs between the paused source and destination")
			st, err := dst.QMP.QueryStatus(ctx)
			require.NoError(t, err)
			assert.Equal(t, "running", st, "the destination guest")
			st, err = src.QMP.QueryStatus(ctx)
			require.NoError(t, err)
			assert.Equal(t, "postmigrate", st, "the source guest")
			assert.True(t, srcDrv.WasRunning(), "the source guest was not running when the migration began")
			last := srcDrv.Status()
			assert.Equal(t, "completed", last.Status)
			assert.Greater(t, p.Total.Bytes, int64(guestMiB<<20)*9/10, "the tunnel carried less than 90% of the random RAM")
			if channels > 0 {
				for _, s := range p.Streams[1:] {
					assert.Positive(t, s.Bytes, "multifd stream %s carried nothing", s.Name)
				}
			}
			t.Logf("multifd=%d: %d bytes through the tunnel in %v (Perform %v, %.0f MB/s); QEMU: total %d ms, downtime %d ms, transferred %d, %d status polls",
				channels, p.Total.Bytes, wall.Round(time.Millisecond), p.Elapsed.Round(time.Millisecond),
				float64(p.Total.Bytes)/p.Elapsed.Seconds()/1e6, last.TotalTime, last.Downtime, last.RAM.Transferred, len(statuses))
		})
	}
}

func envInt(name string, def int) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err != nil {
		return def
	}
	return n
}

// watchLive polls the source while it migrates; the returned func stops
// polling and reports whether the guest ran while QEMU's migration was
// active (a live migration, by QEMU's own status rather than by time).
func watchLive(t *testing.T, qmp *qemu.Client) func() bool {
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan bool, 1)
	go func() {
		seen := false
		for ctx.Err() == nil {
			mi, err1 := qmp.QueryMigrate(ctx)
			st, err2 := qmp.QueryStatus(ctx)
			if err1 == nil && err2 == nil && mi.Status == "active" && st == "running" {
				seen = true
			}
			time.Sleep(10 * time.Millisecond)
		}
		result <- seen
	}()
	var once bool
	var seen bool
	stop := func() bool {
		if !once {
			once = true
			cancel()
			seen = <-result
		}
		return seen
	}
	t.Cleanup(func() { stop() })
	return stop
}
