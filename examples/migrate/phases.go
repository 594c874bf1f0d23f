package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// The phases are rpc/migrate's; this file holds what each host does in
// them (the drivers), for a synthetic guest memory image.

// The example's own status call, like QMP's query-migrate: polled while the
// memory streams, to show that small calls stay responsive.
var procQuery = rpc.Procedure{Prog: 0x45584d50 /* "EXMP" */, Vers: 1, Proc: 1}

// pollEvery is how often the source polls the migration status.
const pollEvery = 5 * time.Millisecond

// guestName is the migrating guest's name, and the migration's ID.
const guestName = "guest-01"

type queryRet struct {
	Status   string
	Received uint64
}

// memDestination is the destination host's driver: it hashes the guest
// memory as it arrives (a real destination hands it to the incoming QEMU)
// and, in Finish, lets the guest run only if its digest matches the
// source's.
type memDestination struct {
	// tamper, a test hook, returns the bytes to hash in place of p, which
	// starts off bytes into the guest memory.
	tamper func(off int64, p []byte) []byte

	mu  sync.Mutex
	h   hash.Hash
	off int64
}

func (d *memDestination) Prepare(ctx context.Context, in *migrate.Incoming) ([]byte, []io.Writer, error) {
	if len(in.Streams) != 1 {
		return nil, nil, fmt.Errorf("%d streams: this destination takes guest memory only", len(in.Streams))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.h, d.off = sha256.New(), 0
	sink := writerFunc(func(p []byte) (int, error) {
		q := p
		if d.tamper != nil {
			q = d.tamper(d.off, p)
		}
		d.h.Write(q)
		d.off += int64(len(p))
		return len(p), nil
	})
	return fmt.Appendf(nil, "dst:%s:incoming:%d", in.ID, in.Streams[0].Size), []io.Writer{sink}, nil
}

func (d *memDestination) Finish(ctx context.Context, in *migrate.Incoming, failed error) ([]byte, error) {
	if failed != nil {
		return nil, nil // nothing to discard but a digest
	}
	d.mu.Lock()
	sum := d.h.Sum(nil)
	d.mu.Unlock()
	if !bytes.Equal(sum, in.PerformCookie) {
		return nil, fmt.Errorf("%s: sha256 mismatch: received %x, the source sent %x", in.ID, sum, in.PerformCookie)
	}
	return fmt.Appendf(nil, "dst:%s:running", in.ID), nil
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// memSource is the source host's driver: it sends the synthetic guest
// memory, hashing it on the way; the digest is its Perform cookie.
type memSource struct {
	cfg config
	out io.Writer // phase lines
	h   hash.Hash
	// endProgress ends the progress line before the phase lines that
	// follow the transfer (on a terminal they would land on it).
	endProgress func()
}

func (s *memSource) Begin(ctx context.Context) (migrate.Plan, error) {
	size := byteSize(s.cfg.size)
	fmt.Fprintf(s.out, "begin     %s, %s of guest memory (seed %d)\n", guestName, &size, s.cfg.seed)
	return migrate.Plan{
		Cookie:  fmt.Appendf(nil, "src:%s:mem=%d", guestName, s.cfg.size),
		Streams: []migrate.StreamInfo{{Name: "memory", Size: s.cfg.size}},
	}, nil
}

func (s *memSource) Perform(ctx context.Context, cookie []byte) ([]io.Reader, error) {
	fmt.Fprintf(s.out, "prepare   destination ready, tunnel stream open (cookie %q)\n", cookie)
	s.h = sha256.New()
	return []io.Reader{io.TeeReader(newGuestMem(s.cfg.size, s.cfg.seed), s.h)}, nil
}

func (s *memSource) PerformCookie(ctx context.Context) ([]byte, error) {
	s.endProgress()
	return s.h.Sum(nil), nil
}

func (s *memSource) Confirm(ctx context.Context, cookie []byte, failed error) error {
	s.endProgress()
	if failed != nil {
		fmt.Fprintf(s.out, "confirm   %s keeps running on the source: %v\n", guestName, failed)
		return nil
	}
	fmt.Fprintf(s.out, "finish    destination verified sha256 %x…, %s running there (cookie %q)\n", s.h.Sum(nil)[:8], guestName, cookie)
	fmt.Fprintf(s.out, "confirm   %s stopped on the source; migration complete\n", guestName)
	return nil
}

// destinationMux serves the migration program and the status call.
func destinationMux(rcv *migrate.Receiver) *rpc.Mux {
	m := rpc.NewMux()
	rcv.Register(m)
	m.Handle(procQuery, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		r := queryRet{Status: "none"}
		if in := rcv.Incoming(guestName); in != nil {
			p := in.Progress()
			r.Status, r.Received = "active", uint64(p.Total.Bytes)
			if p.Total.Done {
				r.Status = "completed"
			}
		}
		return xdr.Marshal(r)
	})
	return m
}

// outcome is what the source measured.
type outcome struct {
	bytes    int64
	dur      time.Duration // Perform, by the helper's clock
	sum      []byte
	p50, p99 time.Duration // of the status call during the transfer
	calls    int
}

// migrate runs the phases on the source host over conn, reporting each on
// out and the transfer's progress on progressW (nil: none).
func migrateGuest(ctx context.Context, cfg config, conn *rpc.Conn, out, progressW io.Writer) (*outcome, error) {
	src := &memSource{cfg: cfg, out: out}
	mig := newOutgoing(conn, src, cfg)
	lat := &latencies{}
	stopPolling := poll(ctx, conn, lat)
	bar := startProgress(progressW, "perform", fixedTotal(cfg.size, func() int64 { return mig.Progress().Total.Bytes }))
	src.endProgress = bar.Stop
	stopLimit := limitBySignal(mig, progressOrDiscard(progressW))
	err := mig.Run(ctx)
	stopLimit()
	bar.Stop()
	stopPolling()
	if err != nil {
		return nil, err
	}
	if err := lat.failure(); err != nil {
		return nil, fmt.Errorf("control call during the stream: %w", err)
	}
	p := mig.Progress()
	o := &outcome{bytes: p.Total.Bytes, dur: p.Elapsed, sum: src.h.Sum(nil)}
	o.p50, o.p99, o.calls = lat.percentiles()
	return o, nil
}

// poll makes the status call every pollEvery on conn, as a management
// application polls query-migrate, and records each round trip in lat.
// stop ends polling and waits for it.
func poll(ctx context.Context, conn *rpc.Conn, lat *latencies) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			t0 := time.Now()
			var q queryRet
			if err := conn.CallXDR(ctx, procQuery, nil, &q); err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					lat.fail(err) // a control call that fails fails the run
				}
				return
			}
			lat.add(time.Since(t0))
		}
	}()
	return func() { cancel(); <-done }
}
