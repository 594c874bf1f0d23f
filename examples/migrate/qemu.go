package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// qemuGuests are the two QEMU processes of a -bench round's setup: a
// source guest whose RAM (a file) is filled with a random pattern, and a
// destination started with -incoming defer. Both are killed by PID when the
// run ends.
type qemuGuests struct {
	dir      string
	src, dst *qemu.Process
}

// startQEMU starts both guests (TCG) with cfg.size of RAM.
func startQEMU(ctx context.Context, cfg config, out io.Writer) (g *qemuGuests, err error) {
	src, err := startSourceGuest(ctx, config{size: cfg.size, seed: cfg.seed}, out)
	if err != nil {
		return nil, err
	}
	g = &qemuGuests{dir: src.dir, src: src.proc}
	if g.dst, err = startGuest(ctx, g.dir, "dst", cfg.size>>20, true); err != nil {
		g.stop()
		return nil, err
	}
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

// startGuest starts a TCG guest of mib MiB whose RAM is the file
// dir/name.ram, with its QMP socket in dir/name; incoming starts it paused
// with -incoming defer. extra are more QEMU arguments.
func startGuest(ctx context.Context, dir, name string, mib int64, incoming bool, extra ...string) (*qemu.Process, error) {
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
	args = append(args, extra...)
	return qemu.Start(ctx, qemu.ProcessOptions{Args: args, Dir: sub})
}

// migrateQEMU migrates the source guest g through conn into the
// destination's QEMU; the destination compares their memory on both
// paused sides (see qemuhosts.go).
func migrateQEMU(ctx context.Context, cfg config, conn *rpc.Conn, g *sourceGuest, out, progressW io.Writer) (*outcome, error) {
	st := &qemuStatus{}
	srcDrv := &qemuSource{g: g, out: out}
	srcDrv.Source = qemu.NewSource(g.qmp, qemu.SourceOptions{Dir: g.dir, Channels: cfg.multifd, OnStatus: st.set})
	mig := newOutgoing(conn, srcDrv, cfg)
	lat := &latencies{}
	stopPolling := poll(ctx, conn, lat)
	bar := startProgress(progressW, "perform", func() (int64, int64) { return st.estimate(mig.Progress().Total.Bytes, g.size) })
	srcDrv.endProgress = bar.Stop
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
	fmt.Fprintf(out, "finish    guest RAM identical on both paused sides (sha256 %x…); destination %s\n",
		srcDrv.sum[:8], srcDrv.finishStatus())
	if err := lat.failure(); err != nil {
		return nil, fmt.Errorf("control call during the stream: %w", err)
	}
	o := &outcome{bytes: p.Total.Bytes, dur: p.Elapsed, sum: srcDrv.sum}
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
