package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// qemuGuests are the two QEMU processes of -qemu: a source guest whose RAM
// (a file) is filled with a random pattern, and a destination started with
// -incoming defer. Both are killed by PID when the run ends.
type qemuGuests struct {
	dir      string
	src, dst *qemu.Process
	dstDrv   *qemu.Destination
	dstSum   []byte // the destination's memory, paused, before it resumed
}

// startQEMU starts both guests (TCG) with cfg.size of RAM.
func startQEMU(ctx context.Context, cfg config, out io.Writer) (g *qemuGuests, err error) {
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		return nil, fmt.Errorf("-qemu: %s not found (apt-get install qemu-system-x86)", qemu.DefaultBinary)
	}
	if cfg.size%(1<<20) != 0 {
		return nil, errors.New("-qemu: -size must be a whole number of MiB")
	}
	dir, err := os.MkdirTemp("", "vmig")
	if err != nil {
		return nil, err
	}
	g = &qemuGuests{dir: dir}
	defer func() {
		if err != nil {
			g.stop()
		}
	}()
	mib := cfg.size >> 20
	srcRAM := filepath.Join(dir, "src.ram")
	if err := randomFile(srcRAM, cfg.size, cfg.seed); err != nil {
		return nil, err
	}
	start := func(name string, incoming bool) (*qemu.Process, error) {
		sub := filepath.Join(dir, name)
		if err := os.Mkdir(sub, 0o700); err != nil {
			return nil, err
		}
		args := []string{
			"-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-m", fmt.Sprint(mib),
			"-nographic", "-nodefaults",
			"-object", fmt.Sprintf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on", mib, filepath.Join(dir, name+".ram")),
		}
		if incoming {
			args = append(args, "-S", "-incoming", "defer")
		}
		return qemu.Start(ctx, qemu.ProcessOptions{Args: args, Dir: sub})
	}
	if g.src, err = start("src", false); err != nil {
		return nil, err
	}
	if g.dst, err = start("dst", true); err != nil {
		return nil, err
	}
	g.dstDrv = qemu.NewDestination(g.dst.QMP, qemu.DestinationOptions{
		Dir:  filepath.Join(dir, "dst"),
		Kill: g.dst.Kill,
		BeforeResume: func(ctx context.Context) error {
			g.dstSum, err = pmemsave(ctx, g.dst.QMP, filepath.Join(dir, "dst.pmem"), cfg.size)
			return err
		},
	})
	fmt.Fprintf(out, "qemu      source pid %d (running, %d MiB of random RAM), destination pid %d (-incoming defer), QEMU %s, TCG\n",
		g.src.PID(), mib, g.dst.PID(), g.src.QMP.Version)
	return g, nil
}

// stop kills both guests and removes their files.
func (g *qemuGuests) stop() {
	for _, p := range []*qemu.Process{g.src, g.dst} {
		if p != nil {
			_ = p.Kill()
		}
	}
	_ = os.RemoveAll(g.dir)
}

// migrateQEMU migrates the source guest into the destination through conn
// and compares their memory on both paused sides.
func migrateQEMU(ctx context.Context, cfg config, conn *rpc.Conn, g *qemuGuests, out, progressW io.Writer) (*outcome, error) {
	srcDrv := qemu.NewSource(g.src.QMP, qemu.SourceOptions{Dir: filepath.Join(g.dir, "src"), Channels: cfg.multifd})
	mig := newOutgoing(conn, srcDrv, cfg)
	lat := &latencies{}
	stopPolling := poll(ctx, conn, lat)
	bar := startProgress(progressW, "perform", cfg.size, func() int64 { return mig.Progress().Total.Bytes })
	stopLimit := limitBySignal(mig, progressOrDiscard(progressW))
	err := mig.Run(ctx)
	stopLimit()
	bar.Stop()
	stopPolling()
	if err != nil {
		return nil, err
	}
	p := mig.Progress()
	streams := "1 stream"
	if cfg.multifd > 0 {
		streams = fmt.Sprintf("%d streams (main + %d multifd)", len(p.Streams), cfg.multifd)
	}
	qs := srcDrv.Status()
	fmt.Fprintf(out, "perform   %d bytes in %s; QEMU: %d ms, downtime %d ms, live: %v\n",
		p.Total.Bytes, streams, qs.TotalTime, qs.Downtime, srcDrv.WasRunning())
	srcSum, err := pmemsave(ctx, g.src.QMP, filepath.Join(g.dir, "src.pmem"), cfg.size)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(srcSum, g.dstSum) {
		return nil, fmt.Errorf("guest memory differs: source sha256 %x, destination %x", srcSum, g.dstSum)
	}
	st, err := g.dst.QMP.QueryStatus(ctx)
	if err != nil {
		return nil, err
	}
	if st != "running" {
		return nil, fmt.Errorf("the destination guest is %s, not running", st)
	}
	fmt.Fprintf(out, "finish    guest RAM identical on both paused sides (sha256 %x…); destination %s\n", srcSum[:8], st)
	if err := lat.failure(); err != nil {
		return nil, fmt.Errorf("control call during the stream: %w", err)
	}
	o := &outcome{bytes: p.Total.Bytes, dur: p.Elapsed, sum: srcSum}
	o.p50, o.p99, o.calls = lat.percentiles()
	return o, nil
}

// pmemsave dumps size bytes of guest memory and returns their sha256.
func pmemsave(ctx context.Context, qmp *qemu.Client, path string, size int64) ([]byte, error) {
	if err := qmp.Execute(ctx, "pmemsave", map[string]any{"val": 0, "size": size, "filename": path}, nil); err != nil {
		return nil, err
	}
	defer os.Remove(path)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// randomFile writes size random bytes (seeded) to path.
func randomFile(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 'q'})
	_, err = io.Copy(f, io.LimitReader(rng, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
