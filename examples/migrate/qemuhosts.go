package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// -qemu, on either host or both in one process. The source host starts its
// guest (or, with -qemu-qmp, attaches to a running one); the destination
// host starts its QEMU with -incoming defer in Prepare, sized from the
// source's Begin cookie, so it needs no -size.
//
// The memory comparison works across hosts: once every stream has been
// pumped and acknowledged, the source waits for its QEMU to report the
// migration completed (the guest is then paused, postmigrate), dumps its
// RAM with pmemsave and sends the sha256 as its Perform cookie. The
// destination's Finish, once its QEMU completed the incoming migration and
// before it resumes the guest, dumps its own RAM and compares: a mismatch
// fails Finish, the destination QEMU is killed and the source guest
// resumes.
//
// Who kills what: a QEMU the helper started is its child, killed by PID on
// every exit path and, on Linux, by the kernel (Pdeathsig) if the helper
// itself is killed. That is right for the destination, whose QEMU must
// never outlive the helper that would resume or discard it. A source guest
// the helper started dies with it too (it is a throwaway demo guest); a
// real source guest is one the helper attaches to (-qemu-qmp), and that
// one the helper never kills: when the helper dies mid-migration, QEMU's
// migration fails on the closed socket and the guest keeps running.

// sourceGuest is the source host's QEMU.
type sourceGuest struct {
	dir  string        // throwaway: the RAM file and the migration socket
	proc *qemu.Process // nil when attached
	qmp  *qemu.Client
	size int64 // guest RAM, bytes
}

func requireQEMUBinary() error {
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		return fmt.Errorf("-qemu: %s not found (apt-get install qemu-system-x86)", qemu.DefaultBinary)
	}
	return nil
}

// startSourceGuest starts a running TCG guest of cfg.size RAM filled with
// a random pattern (seeded by cfg.seed), or attaches to cfg.qmpSocket.
func startSourceGuest(ctx context.Context, cfg config, out io.Writer) (g *sourceGuest, err error) {
	if cfg.qmpSocket == "" {
		if err := requireQEMUBinary(); err != nil {
			return nil, err
		}
		if cfg.size%(1<<20) != 0 {
			return nil, errors.New("-qemu: -size must be a whole number of MiB")
		}
	}
	dir, err := os.MkdirTemp("", "vmig")
	if err != nil {
		return nil, err
	}
	g = &sourceGuest{dir: dir, size: cfg.size}
	defer func() {
		if err != nil {
			g.stop()
		}
	}()
	if cfg.qmpSocket != "" {
		if g.qmp, err = qemu.Dial(ctx, cfg.qmpSocket); err != nil {
			return nil, fmt.Errorf("-qemu-qmp: %w", err)
		}
		if g.size, err = g.qmp.RAMSize(ctx); err != nil {
			return nil, fmt.Errorf("-qemu-qmp: %w", err)
		}
		st, _ := g.qmp.QueryStatus(ctx)
		fmt.Fprintf(out, "qemu      source attached over QMP at %s (%d MiB, %s, QEMU %s): this helper never kills it\n",
			cfg.qmpSocket, g.size>>20, st, g.qmp.Version)
		return g, nil
	}
	if err := randomFile(filepath.Join(dir, "src.ram"), cfg.size, cfg.seed); err != nil {
		return nil, err
	}
	if g.proc, err = startGuest(ctx, dir, "src", cfg.size>>20, false); err != nil {
		return nil, err
	}
	g.qmp = g.proc.QMP
	fmt.Fprintf(out, "qemu      source pid %d (running, %d MiB of random RAM), QEMU %s, TCG\n",
		g.proc.PID(), cfg.size>>20, g.qmp.Version)
	return g, nil
}

// stop kills a guest this helper started (an attached one keeps running)
// and removes the throwaway files.
func (g *sourceGuest) stop() {
	if g.proc != nil {
		_ = g.proc.Kill()
	} else if g.qmp != nil {
		_ = g.qmp.Close()
	}
	_ = os.RemoveAll(g.dir)
}

// qemuSource is the source host's driver: rpc/migrate/qemu's, plus the
// digest of the paused guest's RAM as the Perform cookie.
type qemuSource struct {
	*qemu.Source
	g   *sourceGuest
	out io.Writer
	// endProgress ends the progress line before the phase lines that
	// follow the transfer.
	endProgress func()

	sum    []byte // sha256 of the source's RAM, paused after the migration
	finish []byte // the destination's Finish cookie
}

func (s *qemuSource) PerformCookie(ctx context.Context) ([]byte, error) {
	s.endProgress()
	if _, err := s.g.qmp.WaitMigration(ctx, 10*time.Millisecond); err != nil {
		return nil, err
	}
	sum, err := pmemsave(ctx, s.g.qmp, filepath.Join(s.g.dir, "src.pmem"), s.g.size)
	s.sum = sum
	return sum, err
}

func (s *qemuSource) Confirm(ctx context.Context, cookie []byte, failed error) error {
	s.endProgress()
	err := s.Source.Confirm(ctx, cookie, failed)
	if failed == nil {
		s.finish = cookie
		return err
	}
	st, qerr := s.g.qmp.QueryStatus(ctx)
	if qerr != nil {
		st = "unknown: " + qerr.Error()
	}
	fmt.Fprintf(s.out, "confirm   %s keeps running on the source (QEMU status %s)\n", guestName, st)
	return err
}

// finishStatus is the destination guest's run state from the Finish cookie.
func (s *qemuSource) finishStatus() string {
	var c struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(s.finish, &c) != nil || c.Status == "" {
		return "in an unknown state"
	}
	return c.Status
}

// qemuDestination is the destination host's driver: it starts QEMU in
// Prepare, then hands over to rpc/migrate/qemu's driver, comparing the
// paused guest's RAM with the source's digest before it resumes.
type qemuDestination struct {
	out        io.Writer
	corruptRAM func(path string) error // a test hook: see config

	mu   sync.Mutex
	dir  string
	proc *qemu.Process
	drv  *qemu.Destination
	size int64
	want []byte // the source's digest (Perform cookie)
	got  []byte // this side's
}

func (d *qemuDestination) Prepare(ctx context.Context, in *migrate.Incoming) (cookie []byte, sinks []io.Writer, err error) {
	size, err := qemu.CookieRAM(in.Cookie)
	if err != nil {
		return nil, nil, err
	}
	if size%(1<<20) != 0 {
		return nil, nil, fmt.Errorf("qemu: a guest of %d bytes of RAM, not a whole number of MiB", size)
	}
	// The size is the source's word: a guest larger than this host would
	// fill the disk behind its memory file, or the host's memory.
	if limit := hostRAM(); limit > 0 && size > limit {
		return nil, nil, fmt.Errorf("qemu: the source announces a guest of %d MiB, more than this host's %d MiB of RAM", size>>20, limit>>20)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// One migration per destination process: a second Prepare replaced
	// the first one's QEMU, which then ran on, never killed.
	if d.dir != "" {
		return nil, nil, fmt.Errorf("qemu: this destination is already taking a guest (migration %s refused)", in.ID)
	}
	dir, err := os.MkdirTemp("", "vmig")
	if err != nil {
		return nil, nil, err
	}
	d.dir, d.size = dir, size
	defer func() {
		if err != nil { // the Receiver calls no Finish after a failed Prepare
			d.stopLocked()
			d.dir, d.proc, d.drv = "", nil, nil
		}
	}()
	if d.proc, err = startGuest(ctx, dir, "dst", size>>20, true); err != nil {
		return nil, nil, err
	}
	d.drv = qemu.NewDestination(d.proc.QMP, qemu.DestinationOptions{
		Dir: filepath.Join(dir, "dst"), Kill: d.proc.Kill, BeforeResume: d.compare,
	})
	fmt.Fprintf(d.out, "qemu      destination pid %d (-incoming defer, %d MiB), QEMU %s, TCG\n",
		d.proc.PID(), size>>20, d.proc.QMP.Version)
	return d.drv.Prepare(ctx, in)
}

// compare runs with the destination guest paused, its migration complete.
func (d *qemuDestination) compare(ctx context.Context) error {
	if d.corruptRAM != nil {
		if err := d.corruptRAM(filepath.Join(d.dir, "dst.ram")); err != nil {
			return err
		}
	}
	sum, err := pmemsave(ctx, d.proc.QMP, filepath.Join(d.dir, "dst.pmem"), d.size)
	if err != nil {
		return err
	}
	d.got = sum
	if !bytes.Equal(sum, d.want) {
		return fmt.Errorf("guest memory differs on the paused sides: source sha256 %x, destination %x", d.want, sum)
	}
	return nil
}

func (d *qemuDestination) Finish(ctx context.Context, in *migrate.Incoming, failed error) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drv == nil {
		return nil, nil
	}
	if failed == nil {
		d.want = in.PerformCookie
	}
	return d.drv.Finish(ctx, in, failed)
}

// stop kills the destination QEMU, if any, and removes its files.
func (d *qemuDestination) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *qemuDestination) stopLocked() {
	if d.proc != nil {
		_ = d.proc.Kill()
	}
	if d.dir != "" {
		_ = os.RemoveAll(d.dir)
	}
}

// verified is the destination's one-line summary after a success.
func (d *qemuDestination) verified() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.got) < 8 {
		return ""
	}
	return fmt.Sprintf("guest RAM identical to the source's on both paused sides (sha256 %x…)", d.got[:8])
}

// qemuStatus keeps the source QEMU's last query-migrate, for the progress
// line: with multifd no stream's size is known in advance, but QEMU knows
// how much RAM it has left to send.
type qemuStatus struct {
	mu   sync.Mutex
	last qemu.MigrationInfo
	seen bool
}

func (q *qemuStatus) set(mi qemu.MigrationInfo) {
	q.mu.Lock()
	q.last, q.seen = mi, true
	q.mu.Unlock()
}

// estimate returns the bytes sent through the tunnel and the total it
// will come to: what QEMU has sent plus its RAM remaining (it grows when
// the guest dirties pages again), the guest's RAM size until QEMU first
// reports, never less than what was sent.
func (q *qemuStatus) estimate(sent, ram int64) (int64, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	total := ram
	if q.seen && q.last.RAM.Total > 0 {
		total = q.last.RAM.Transferred + q.last.RAM.Remaining
	}
	return sent, max(total, sent)
}
