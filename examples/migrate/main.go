// Command migrate is virtrpc's main job, run end to end on one machine: a
// virtual machine's memory streams from a source host to a destination host
// through one TLS 1.3 connection, as libvirt's tunnelled live migration moves
// it, while a small status call on the same connection stays responsive.
//
//	go run ./examples/migrate [-size 1GiB] [-seed 1] [-compat] [-no-baseline] [-quiet] [-qemu [-multifd N]] [-limit 100MB]
//	go run ./examples/migrate -bench 3 [-size 1GiB]                # real QEMU: direct, QEMU's TLS, the tunnel
//	go run ./examples/migrate -listen 127.0.0.1:16514 -pki DIR     # the destination host
//	go run ./examples/migrate -connect 127.0.0.1:16514 -pki DIR    # the source host
//	(add -qemu to both for real QEMU; -qemu-qmp SOCKET on the source attaches to a running guest)
//	go run ./examples/migrate -transport tcp -insecure -listen 127.0.0.1:16509 -sasl-db users.scram
//	VIRTRPC_SASL_PASSWORD=... go run ./examples/migrate -transport tcp -insecure -connect 127.0.0.1:16509 -sasl-user fred
//	go run ./examples/migrate -transport unix -listen /run/vmig.sock    # EXTERNAL: the peer's uid
//	go run ./examples/migrate -transport ssh -ssh HOST:22 -connect /run/vmig.sock
//
// Both hosts run in this process, each with its own rpc.Conn on one end of a
// real TLS 1.3 connection over 127.0.0.1, authenticated both ways with a
// throwaway PKI. No QEMU is needed: the guest memory is a synthetic image
// (4 KiB pages, about a quarter of them zero), generated as it is sent and
// never held in memory. With -qemu, two real QEMU processes (TCG) take its
// place: a running source guest of -size RAM filled with a random pattern
// and a destination started with -incoming defer, migrated live through the
// tunnel by rpc/migrate/qemu (with -multifd N, QEMU's multifd channels each
// in their own stream); their memory is compared with pmemsave on both
// paused sides before the destination resumes.
//
// The phases are rpc/migrate's (libvirt's v3 migration protocol in its
// peer-to-peer, tunnelled form, where the source drives every phase); this
// program supplies what each host does in them (phases.go):
//
//   - Begin, on the source: describe the guest (name, memory size) and its
//     one stream.
//   - Prepare, on the destination: get ready and return a cookie; the
//     helper opens the tunnel stream.
//   - Perform, on the source: the helper pumps the guest memory into the
//     stream, hashed (sha256) on the way, while the source polls a
//     query-migrate style status call every 5 ms over the same connection.
//     The destination hashes what it receives. The digest is the Perform
//     cookie.
//   - Finish, on the destination: compare the digests and, only if they
//     match, run the guest and return a cookie. A mismatch fails the
//     migration (exit status 1).
//   - Confirm, on the source: the source guest is stopped for good.
//
// Then the same bytes cross a plain TLS 1.3 connection with io.Copy (same
// cipher, same generator, hashed on both ends too), and both throughputs are
// printed side by side: the stream should run at the speed of plain TLS.
//
// The last line begins "verified:" with the bytes moved, the MB/s through
// the tunnel, the MB/s of plain TLS in the same run, and their ratio.
//
// -listen ADDR runs only the destination host and -connect ADDR only the
// source host, as two processes on one machine or two; both take their
// certificates from -pki DIR in libvirt's layout, where -listen writes a
// throwaway PKI first if DIR has none (copy it to the source host). There
// the last line has no plain TLS baseline.
//
// -qemu works across the two processes too: the destination starts its
// QEMU (-incoming defer) in Prepare, sized from the source's Begin cookie;
// the source starts its guest, or with -qemu-qmp SOCKET attaches to a
// running one that it never kills. The memory comparison crosses hosts in
// the cookies: once the streams are acknowledged the source waits for its
// QEMU to complete (guest paused), pmemsaves its RAM and sends the sha256
// as the Perform cookie; the destination's Finish pmemsaves its paused
// guest and compares before it resumes it (a mismatch fails Finish, kills
// the destination QEMU and resumes the source guest). A QEMU this helper
// started dies with it (killed by PID, and by Pdeathsig if the helper is
// killed): a destination QEMU must never outlive its helper. An attached
// source guest survives the helper: its migration fails and it keeps
// running (qemuhosts.go).
//
// The progress line (stderr) is redrawn in place on a terminal; otherwise
// it is one line per second. With -multifd the streams' sizes are unknown:
// the total is QEMU's own (query-migrate: RAM sent plus remaining).
//
// -transport tls (the default: TLS 1.3, mutual certificates), tcp (plain
// TCP: needs -insecure, and SASL SCRAM-SHA-256 with -sasl-db FILE on the
// destination, -sasl-user NAME and -sasl-password-file FILE or
// $VIRTRPC_SASL_PASSWORD on the source), unix (a socket path: EXTERNAL by
// the peer's uid, or SCRAM) or ssh (the source only: through the sshd at
// -ssh ADDR to the destination's unix socket); see transports.go. In one
// process the baseline runs over the same transport: plain TLS, plain TCP
// or a plain unix socket.
//
// A bad flag, an unreachable peer, a refused certificate or a missing QEMU
// prints one line and exits non-zero (2 for flags, 1 otherwise).
//
// -bench N runs N interleaved rounds of real-QEMU migrations of a -size
// guest (needs qemu-system-x86_64): QEMU to QEMU directly over a unix
// socket and over plain TCP, QEMU's own TLS, and the tunnel over TLS with
// one channel and with multifd 4, with wall time, MB/s, CPU seconds of all
// processes, and the ratio to plain TCP.
//
// -cpuprofile FILE writes this process's CPU profile (go tool pprof).
//
// -limit caps the migration's bandwidth (rpc/migrate's token bucket); while
// it runs, kill -USR1 doubles the limit and kill -USR2 halves it (without a
// limit, USR2 sets one at half the current rate).
//
// -compat makes the source speak libvirt's own protocol (rpc.CompatOnly)
// instead of negotiating virtrpc's native mode; Ctrl-C aborts the
// migration (both hosts report the phase it failed in) and exits non-zero.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

type config struct {
	size     int64
	seed     uint64
	compat   bool   // force libvirt compat mode
	baseline bool   // also send over plain TLS
	quiet    bool   // no progress line
	qemu     bool   // real QEMU guests instead of the synthetic image
	multifd  int    // QEMU's multifd channels (with qemu)
	limit    int64  // bandwidth limit, bytes per second; 0: none
	listen   string // run only the destination, on this address
	connect  string // run only the source, toward this address
	pki      string // libvirt-layout PKI directory for listen/connect
	bench    int    // rounds of the real-QEMU benchmark; 0: none
	// qmpSocket attaches the source to a running QEMU's QMP socket
	// instead of starting one (implies qemu).
	qmpSocket string

	transport        string // tls, tcp, unix or ssh (transports.go)
	insecure         bool   // allow -transport tcp's unencrypted data
	saslUser         string // the source's SASL login
	saslPasswordFile string
	saslDB           string // the destination's SASL users
	sshAddr          string // -transport ssh: the sshd
	sshUser          string
	sshKey           string
	sshKnownHosts    string

	// ready, a test hook, gets the destination's address once it listens.
	ready func(addr string)

	// tamper is a test hook for the destination: see destination.tamper.
	tamper func(off int64, p []byte) []byte
	// corruptRAM is a test hook for a -qemu destination: it gets the
	// paused destination guest's RAM file before the comparison.
	corruptRAM func(path string) error
}

func main() {
	cfg := config{size: 1 << 30}
	size := byteSize(cfg.size)
	flag.Var(&size, "size", "guest memory `size`: 256MiB, 1GiB, 4GiB, ...")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the synthetic guest memory")
	flag.BoolVar(&cfg.compat, "compat", false, "force libvirt compat mode instead of virtrpc's native mode")
	noBaseline := flag.Bool("no-baseline", false, "skip the plain TLS comparison")
	flag.BoolVar(&cfg.quiet, "quiet", false, "no progress line")
	flag.BoolVar(&cfg.qemu, "qemu", false, "migrate a real QEMU guest (TCG) of -size RAM with a random pattern; needs qemu-system-x86_64")
	flag.IntVar(&cfg.multifd, "multifd", 0, "with -qemu: QEMU multifd `channels`, each its own stream (0: one stream)")
	flag.StringVar(&cfg.qmpSocket, "qemu-qmp", "", "on the source: attach to the running QEMU whose QMP unix `SOCKET` this is, instead of starting one (implies -qemu; never killed by this helper)")
	var limit rate
	flag.Var(&limit, "limit", "bandwidth `limit` per second, such as 100MB or 1GiB (default none); while it runs, SIGUSR1 doubles it and SIGUSR2 halves it")
	flag.StringVar(&cfg.listen, "listen", "", "run only the destination host, listening on `ADDR` (host:port)")
	flag.StringVar(&cfg.connect, "connect", "", "run only the source host, migrating to the destination at `ADDR`")
	flag.StringVar(&cfg.pki, "pki", "", "with -listen/-connect: libvirt-layout certificate `DIR` (-listen writes a throwaway one if empty)")
	flag.IntVar(&cfg.bench, "bench", 0, "run `N` interleaved rounds of real-QEMU migrations: directly (unix, TCP), QEMU's TLS, the tunnel (1 channel, multifd 4)")
	flag.StringVar(&cfg.transport, "transport", "tls", "`tls` (mutual certificates), tcp (plain, needs -insecure and SASL), unix (a socket path) or ssh (source only, through sshd to the destination's unix socket)")
	flag.BoolVar(&cfg.insecure, "insecure", false, "allow -transport tcp, whose data is not encrypted")
	flag.StringVar(&cfg.saslUser, "sasl-user", "", "on the source: log in with SASL SCRAM-SHA-256 as `NAME` (password from -sasl-password-file or $"+saslPasswordEnv+")")
	flag.StringVar(&cfg.saslPasswordFile, "sasl-password-file", "", "on the source: the SASL password is this `FILE`'s first line")
	flag.StringVar(&cfg.saslDB, "sasl-db", "", "on the destination: SASL users (SCRAM verifiers) in `FILE`, written by examples/saslpasswd")
	flag.StringVar(&cfg.sshAddr, "ssh", "", "with -transport ssh: the sshd at `ADDR` (host:port) on the destination host")
	flag.StringVar(&cfg.sshUser, "ssh-user", "", "with -transport ssh: the `USER` to log in as (default $USER)")
	flag.StringVar(&cfg.sshKey, "ssh-key", "", "with -transport ssh: private key `FILE` (default ~/.ssh/id_*)")
	flag.StringVar(&cfg.sshKnownHosts, "ssh-known-hosts", "", "with -transport ssh: known_hosts `FILE` (default ~/.ssh/known_hosts)")
	cpuprofile := flag.String("cpuprofile", "", "write this process's CPU profile to `FILE`")
	// A bad flag is one line, not the whole usage: -help prints that.
	flag.CommandLine.Init(os.Args[0], flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard)
	if err := flag.CommandLine.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			flag.CommandLine.SetOutput(os.Stderr)
			flag.Usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "migrate: %v (-help lists the flags)\n", err)
		os.Exit(2)
	}
	cfg.limit = int64(limit.byteSize)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "migrate: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	switch {
	case cfg.listen != "" && cfg.connect != "":
		fmt.Fprintln(os.Stderr, "migrate: -listen and -connect are the two processes: give one")
		os.Exit(2)
	case cfg.qmpSocket != "" && cfg.listen != "":
		fmt.Fprintln(os.Stderr, "migrate: -qemu-qmp attaches the source's QEMU: not with -listen")
		os.Exit(2)
	case flag.NArg() > 0:
		fmt.Fprintf(os.Stderr, "migrate: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	case cfg.multifd < 0 || cfg.multifd > 63:
		fmt.Fprintln(os.Stderr, "migrate: -multifd: 0 to 63 channels")
		os.Exit(2)
	case cfg.multifd > 0 && !cfg.qemu && cfg.qmpSocket == "":
		fmt.Fprintln(os.Stderr, "migrate: -multifd needs -qemu")
		os.Exit(2)
	}
	if err := checkTransport(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(2)
	}
	cfg.size, cfg.baseline = int64(size), !*noBaseline
	cfg.qemu = cfg.qemu || cfg.qmpSocket != ""

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second Ctrl-C kills at once
	err := run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(1)
	}
}

// run does the whole job: a migration, then the plain TLS baseline, then the
// summary on stdout. Progress goes to stderr.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	if cfg.transport == "" {
		cfg.transport = "tls"
	}
	progressW := stderr
	if cfg.quiet {
		progressW = nil
	}
	switch {
	case cfg.bench > 0:
		return runBench(ctx, cfg, stdout)
	case cfg.listen != "":
		return runDestination(ctx, cfg, stdout)
	case cfg.connect != "":
		return runSource(ctx, cfg, stdout, progressW)
	}
	cr, err := oneProcessCreds(cfg)
	if err != nil {
		return err
	}

	// The destination host serves the migration program.
	var dstDrv migrate.DestinationDriver = &memDestination{tamper: cfg.tamper}
	var guest *sourceGuest
	if cfg.qemu {
		if guest, err = startSourceGuest(ctx, cfg, stdout); err != nil {
			return err
		}
		defer guest.stop()
		cfg.size = guest.size // an attached guest's
		qdst := &qemuDestination{out: stdout, corruptRAM: cfg.corruptRAM}
		defer qdst.stop()
		dstDrv = qdst
	}
	rcv := migrate.NewReceiver(dstDrv, nil)
	addr, cleanAddr, err := loopbackAddr(cfg.transport)
	if err != nil {
		return err
	}
	defer cleanAddr()
	l, err := cr.listen(ctx, addr)
	if err != nil {
		return err
	}
	sopts := &rpc.Options{Handlers: destinationMux(rcv)}
	cr.serve(sopts, sopts.Handlers)
	serveCtx, stopServing := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = rpc.Serve(serveCtx, l, sopts, nil)
	}()
	defer func() { stopServing(); <-served; _ = rcv.Close() }()

	// The source host connects to it.
	conn, err := connectSource(ctx, cfg, cr, l.Addr().String(), stdout)
	if err != nil {
		return err
	}
	defer conn.Close()

	var res *outcome
	if cfg.qemu {
		res, err = migrateQEMU(ctx, cfg, conn, guest, stdout, progressW)
	} else {
		res, err = migrateGuest(ctx, cfg, conn, stdout, progressW)
	}
	if err != nil {
		return err
	}
	name := transportName(cfg.transport)
	var plain time.Duration
	if cfg.baseline {
		fmt.Fprintf(stdout, "baseline  the same bytes over a plain %s connection with io.Copy\n", name)
		if plain, err = plainCopy(ctx, cr, cfg, progressW); err != nil {
			return err
		}
	}

	control := "no control call completed"
	if res.calls > 0 {
		control = fmt.Sprintf("control call p50 %.2f ms, p99 %.2f ms", ms(res.p50), ms(res.p99))
	}
	fmt.Fprintf(stdout, "virtrpc stream  %d bytes  %.2f s  %.0f MB/s  (%s)\n",
		res.bytes, res.dur.Seconds(), mbps(res.bytes, res.dur), control)
	verified := fmt.Sprintf("destination verified sha256 %x…", res.sum[:8])
	if !cfg.baseline {
		fmt.Fprintln(stdout, verified)
		fmt.Fprintf(stdout, "verified: %d bytes, %.0f MB/s through virtrpc over %s (no baseline run)\n",
			res.bytes, mbps(res.bytes, res.dur), name)
		return nil
	}
	ratio := plain.Seconds() / res.dur.Seconds() * float64(res.bytes) / float64(cfg.size)
	fmt.Fprintf(stdout, "%-15s %d bytes  %.2f s  %.0f MB/s\n", "plain "+name, cfg.size, plain.Seconds(), mbps(cfg.size, plain))
	fmt.Fprintf(stdout, "ratio %.2f of plain %s; %s\n", ratio, name, verified)
	fmt.Fprintf(stdout, "verified: %d bytes, %.0f MB/s through virtrpc over %s, plain %s %.0f MB/s in the same run, ratio %.2f\n",
		res.bytes, mbps(res.bytes, res.dur), name, name, mbps(cfg.size, plain), ratio)
	return nil
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// plainCopy sends the same guest memory over a plain connection of the
// same transport (TLS 1.3, TCP, a unix socket) with io.Copy, both ends
// hashing as in the migration, and returns how long it took from the first
// byte until the receiver had the last.
func plainCopy(ctx context.Context, cr *creds, cfg config, progressW io.Writer) (time.Duration, error) {
	name := "plain " + transportName(cr.kind)
	addr, cleanAddr, err := loopbackAddr(cr.kind)
	if err != nil {
		return 0, err
	}
	defer cleanAddr()
	l, err := cr.listen(ctx, addr)
	if err != nil {
		return 0, err
	}
	type result struct {
		n   int64
		sum []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		defer context.AfterFunc(ctx, func() { _ = c.Close() })()
		h := sha256.New()
		n, err := io.Copy(h, c)
		got <- result{n, h.Sum(nil), err}
	}()
	defer func() { _ = l.Close() }()

	c, err := cr.dial(ctx, cfg, l.Addr().String())
	if err != nil {
		_ = l.Close()
		<-got
		return 0, err
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { _ = c.Close() })()

	w := &countingWriter{w: c}
	bar := startProgress(progressW, "baseline", fixedTotal(cfg.size, w.n.Load))
	h := sha256.New()
	start := time.Now()
	n, err := io.Copy(w, io.TeeReader(newGuestMem(cfg.size, cfg.seed), h))
	if cw, ok := c.(interface{ CloseWrite() error }); ok && err == nil {
		err = cw.CloseWrite() // the receiver sees EOF (TLS: close_notify)
	} else {
		_ = c.Close()
	}
	r := <-got
	dur := time.Since(start)
	bar.Stop()
	switch {
	case ctx.Err() != nil:
		return 0, fmt.Errorf("%s: %w", name, context.Cause(ctx))
	case err != nil:
		return 0, fmt.Errorf("%s: %w", name, err)
	case r.err != nil:
		return 0, fmt.Errorf("%s receiver: %w", name, r.err)
	case r.n != n || !bytes.Equal(r.sum, h.Sum(nil)):
		return 0, fmt.Errorf("%s: sha256 mismatch", name)
	}
	return dur, nil
}

// loopbackAddr is an address to listen on in this process: 127.0.0.1 at
// a free port, or a unix socket in a throwaway directory (clean removes
// it).
func loopbackAddr(kind string) (addr string, clean func(), err error) {
	if kind != "unix" {
		return "127.0.0.1:0", func() {}, nil
	}
	dir, err := os.MkdirTemp("", "vmigsock")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(dir, "migrate.sock"), func() { _ = os.RemoveAll(dir) }, nil
}

// countingWriter counts the bytes written through it, for the progress line.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
