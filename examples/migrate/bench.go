package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
	"github.com/virtrpc/virtrpc/transport"
)

// -bench N: real QEMU migrations of a -size random-RAM guest, N rounds,
// each round running every method once (interleaved): QEMU to QEMU directly
// over a unix socket and over plain TCP, QEMU's own TLS, and the virtrpc
// tunnel over TLS with one channel and with multifd 4. Reported: medians
// of wall time (migrate until the source completed), MB/s, and the CPU
// seconds of both QEMU processes plus this one (both tunnel endpoints),
// and the wall time relative to direct plain TCP; "dst s" is the
// destination QEMU's share of the CPU (it is the slowest stage: about one
// core for the whole run). The tunnel's time is
// its whole Run (Begin to Confirm, the destination resumed); the direct
// ones end when the source QEMU reports completed.
//
// VIRTRPC_BENCH_ONLY, a comma-separated list of unix, tcp, tcpmultifd,
// qemutls, tunnel and multifd, runs only those methods (tcpmultifd, QEMU to
// QEMU over TCP with multifd 4, only then) (to profile one, say); the × TCP
// column then needs tcp among them.

type benchMethod struct {
	key  string // for VIRTRPC_BENCH_ONLY
	name string
	run  func(ctx context.Context, b *bencher) (wall time.Duration, bytes int64, err error)
}

type bencher struct {
	cfg config
	dir string
	pki *testcert.PKI
	src *qemu.Process
	dst *qemu.Process
}

func runBench(ctx context.Context, cfg config, stdout io.Writer) error {
	g, err := startQEMU(ctx, cfg, io.Discard) // checks QEMU, writes the random RAM
	if err != nil {
		return err
	}
	g.src.Kill()
	g.dst.Kill()
	defer g.stop()
	pki, err := testcert.New()
	if err != nil {
		return err
	}
	b := &bencher{cfg: cfg, dir: g.dir, pki: pki}
	if err := b.writeQEMUTLS(); err != nil {
		return err
	}
	methods := []benchMethod{
		{"unix", "QEMU→QEMU, unix socket", func(ctx context.Context, b *bencher) (time.Duration, int64, error) {
			return b.direct(ctx, "unix:"+filepath.Join(b.dir, "direct.sock"), false, 0)
		}},
		{"tcp", "QEMU→QEMU, plain TCP", func(ctx context.Context, b *bencher) (time.Duration, int64, error) {
			return b.direct(ctx, "tcp:127.0.0.1:"+freePort(), false, 0)
		}},
		{"tcpmultifd", "QEMU→QEMU, plain TCP, multifd 4", func(ctx context.Context, b *bencher) (time.Duration, int64, error) {
			return b.direct(ctx, "tcp:127.0.0.1:"+freePort(), false, 4)
		}},
		{"qemutls", "QEMU's own TLS", func(ctx context.Context, b *bencher) (time.Duration, int64, error) {
			return b.direct(ctx, "tcp:127.0.0.1:"+freePort(), true, 0)
		}},
		{"tunnel", "virtrpc tunnel, TLS, 1 channel", func(ctx context.Context, b *bencher) (time.Duration, int64, error) { return b.tunnel(ctx, 0) }},
		{"multifd", "virtrpc tunnel, TLS, multifd 4", func(ctx context.Context, b *bencher) (time.Duration, int64, error) { return b.tunnel(ctx, 4) }},
	}
	only := os.Getenv("VIRTRPC_BENCH_ONLY")
	if only == "" {
		methods = slices.DeleteFunc(methods, func(m benchMethod) bool { return m.key == "tcpmultifd" })
	} else {
		keys := strings.Split(only, ",")
		methods = slices.DeleteFunc(methods, func(m benchMethod) bool { return !slices.Contains(keys, m.key) })
		if len(methods) == 0 {
			return fmt.Errorf("VIRTRPC_BENCH_ONLY=%s names no method (unix, tcp, tcpmultifd, qemutls, tunnel, multifd)", only)
		}
	}
	tcp := slices.IndexFunc(methods, func(m benchMethod) bool { return m.key == "tcp" })
	type sample struct {
		wall, cpu, self, dst time.Duration
		bytes                int64
	}
	results := make([][]sample, len(methods))
	for round := range cfg.bench {
		for i, m := range methods {
			if err := b.startPair(ctx); err != nil {
				return err
			}
			cpu0, self0, dst0 := b.cpu(), selfCPU(), procCPU(b.dst)
			wall, n, err := m.run(ctx, b)
			cpu, self, dst := b.cpu()-cpu0, selfCPU()-self0, procCPU(b.dst)-dst0
			b.src.Kill()
			b.dst.Kill()
			if err != nil {
				return fmt.Errorf("bench %s: %w", m.name, err)
			}
			results[i] = append(results[i], sample{wall, cpu, self, dst, n})
			fmt.Fprintf(stdout, "round %d  %-32s %6.2f s  %5.0f MB/s  CPU %5.2f s (this process %4.2f s, destination QEMU %4.2f s)\n",
				round+1, m.name, wall.Seconds(), mbps(n, wall), cpu.Seconds(), self.Seconds(), dst.Seconds())
		}
	}
	fmt.Fprintf(stdout, "\nmedians of %d, %s guest with random RAM, QEMU %s TCG\n", cfg.bench, (*byteSize)(&cfg.size), b.src.QMP.Version)
	fmt.Fprintf(stdout, "%-32s %8s %8s %8s %8s %8s %10s\n", "method", "wall s", "MB/s", "CPU s", "self s", "dst s", "× TCP")
	type row struct{ wall, rate, cpu, self, dst float64 }
	rows := make([]row, len(methods))
	for i := range methods {
		med := func(f func(sample) float64) float64 {
			v := make([]float64, 0, len(results[i]))
			for _, s := range results[i] {
				v = append(v, f(s))
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		rows[i] = row{
			wall: med(func(s sample) float64 { return s.wall.Seconds() }),
			rate: med(func(s sample) float64 { return float64(s.bytes) / s.wall.Seconds() / 1e6 }),
			cpu:  med(func(s sample) float64 { return s.cpu.Seconds() }),
			self: med(func(s sample) float64 { return s.self.Seconds() }),
			dst:  med(func(s sample) float64 { return s.dst.Seconds() }),
		}
	}
	for i, m := range methods {
		r := rows[i]
		ratio := "-"
		if tcp >= 0 {
			ratio = fmt.Sprintf("%.2f×", r.wall/rows[tcp].wall)
		}
		fmt.Fprintf(stdout, "%-32s %8.2f %8.0f %8.2f %8.2f %8.2f %10s\n", m.name, r.wall, r.rate, r.cpu, r.self, r.dst, ratio)
	}
	return nil
}

// writeQEMUTLS writes the PKI in QEMU's file names (dashes, unlike libvirt's).
func (b *bencher) writeQEMUTLS() error {
	dir := filepath.Join(b.dir, "qtls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"ca-cert.pem": b.pki.CAPEM, "server-cert.pem": b.pki.ServerCertPEM, "server-key.pem": b.pki.ServerKeyPEM,
		"client-cert.pem": b.pki.ClientCertPEM, "client-key.pem": b.pki.ClientKeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startPair starts a running source and a waiting destination.
func (b *bencher) startPair(ctx context.Context) error {
	mib := b.cfg.size >> 20
	start := func(name string, incoming bool) (*qemu.Process, error) {
		sub := filepath.Join(b.dir, name)
		_ = os.MkdirAll(sub, 0o700)
		ram := filepath.Join(b.dir, name+".ram")
		if incoming {
			_ = os.Remove(ram)
		}
		args := []string{"-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-m", fmt.Sprint(mib), "-nographic", "-nodefaults",
			"-object", fmt.Sprintf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on", mib, ram)}
		if incoming {
			args = append(args, "-S", "-incoming", "defer")
		}
		return qemu.Start(ctx, qemu.ProcessOptions{Args: args, Dir: sub})
	}
	var err error
	if b.src, err = start("src", false); err != nil {
		return err
	}
	if b.dst, err = start("dst", true); err != nil {
		b.src.Kill()
	}
	return err
}

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpu is the CPU time used so far by both QEMU processes and this one.
func (b *bencher) cpu() time.Duration { return selfCPU() + procCPU(b.src) + procCPU(b.dst) }

// procCPU is the CPU time used so far by a QEMU process, 0 if it is gone.
func procCPU(p *qemu.Process) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime, stime: fields 14, 15
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

// direct migrates QEMU to QEMU over uri, with QEMU's own TLS if tls, with
// that many multifd channels if channels > 0.
func (b *bencher) direct(ctx context.Context, uri string, tls bool, channels int) (time.Duration, int64, error) {
	for _, side := range []struct {
		p        *qemu.Process
		endpoint string
	}{{b.src, "client"}, {b.dst, "server"}} {
		params := map[string]any{"max-bandwidth": int64(100 << 30)}
		if channels > 0 {
			caps := map[string]any{"capabilities": []map[string]any{{"capability": "multifd", "state": true}}}
			if err := side.p.QMP.Execute(ctx, "migrate-set-capabilities", caps, nil); err != nil {
				return 0, 0, err
			}
			params["multifd-channels"] = channels
		}
		if tls {
			if err := side.p.QMP.Execute(ctx, "object-add", map[string]any{"qom-type": "tls-creds-x509", "id": "tls0",
				"dir": filepath.Join(b.dir, "qtls"), "endpoint": side.endpoint, "verify-peer": true}, nil); err != nil {
				return 0, 0, err
			}
			params["tls-creds"] = "tls0"
			if side.endpoint == "client" {
				params["tls-hostname"] = testcert.ServerName
			}
		}
		if err := side.p.QMP.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
			return 0, 0, err
		}
	}
	if err := b.dst.QMP.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := b.src.QMP.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return 0, 0, err
	}
	for {
		mi, err := b.src.QMP.QueryMigrate(ctx)
		if err != nil {
			return 0, 0, err
		}
		switch mi.Status {
		case "completed":
			return time.Since(start), mi.RAM.Transferred, nil
		case "failed", "cancelled":
			return 0, 0, fmt.Errorf("QEMU: migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tunnel migrates through rpc/migrate over a TLS connection on loopback.
func (b *bencher) tunnel(ctx context.Context, channels int) (time.Duration, int64, error) {
	rcv := migrate.NewReceiver(qemu.NewDestination(b.dst.QMP, qemu.DestinationOptions{Dir: filepath.Join(b.dir, "dst"), Kill: b.dst.Kill}), nil)
	defer rcv.Close()
	mux := rpc.NewMux()
	rcv.Register(mux)
	l, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: b.pki.ServerConfig()})
	if err != nil {
		return 0, 0, err
	}
	serveCtx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = rpc.Serve(serveCtx, l, &rpc.Options{Handlers: mux}, nil) }()
	defer func() { stop(); <-served }()
	tc, err := transport.DialTLS(ctx, "tcp", l.Addr().String(), &transport.TLSOptions{Config: b.pki.ClientConfig()})
	if err != nil {
		return 0, 0, err
	}
	conn, err := rpc.Client(ctx, tc, nil)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	mig := migrate.NewOutgoing(conn, qemu.NewSource(b.src.QMP, qemu.SourceOptions{Dir: filepath.Join(b.dir, "src"), Channels: channels}), nil)
	start := time.Now()
	if err := mig.Run(ctx); err != nil {
		return 0, 0, err
	}
	return time.Since(start), mig.Progress().Total.Bytes, nil
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "0"
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
