package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// The migration program: libvirt's v3 migration calls, reduced to what it
// takes to move the memory. The program number is this example's own.
const migrateProg = 0x4d494752 // "MIGR"

var (
	// Prepare, like REMOTE_PROC_DOMAIN_MIGRATE_PREPARE_TUNNEL3: the call
	// opens the tunnel stream the memory then flows through.
	procPrepare = rpc.Procedure{Prog: migrateProg, Vers: 3, Proc: 1}
	// Finish, like REMOTE_PROC_DOMAIN_MIGRATE_FINISH3: the destination
	// checks what it received and takes the guest over.
	procFinish = rpc.Procedure{Prog: migrateProg, Vers: 3, Proc: 2}
	// Query, like QMP's query-migrate: a small status call polled while
	// the memory streams.
	procQuery = rpc.Procedure{Prog: migrateProg, Vers: 3, Proc: 3}
)

// pollEvery is how often the source polls the migration status.
const pollEvery = 5 * time.Millisecond

// The calls' arguments and replies, XDR-encoded as libvirt's are.
type (
	prepareArgs struct {
		Name   string
		Size   uint64
		Cookie string // from Begin
	}
	prepareRet struct{ Cookie string }
	finishArgs struct {
		Name   string
		Bytes  uint64
		Digest [sha256.Size]byte // computed by the source as it sent
		Cookie string            // from Prepare
	}
	finishRet struct{ Cookie string }
	queryRet  struct {
		Status   string
		Received uint64
	}
)

// destination is the destination host's side: the handlers of the program.
type destination struct {
	// tamper, a test hook, returns the bytes to hash in place of p, which
	// starts off bytes into the guest memory.
	tamper func(off int64, p []byte) []byte

	mu sync.Mutex
	in *incoming      // the migration being received, if any
	wg sync.WaitGroup // receiving goroutines
}

// incoming is one guest's memory arriving.
type incoming struct {
	name     string
	received atomic.Int64
	done     chan struct{} // closed once the stream ended; then n, sum, err are set
	n        int64
	sum      []byte
	err      error
}

func (d *destination) mux() *rpc.Mux {
	m := rpc.NewMux()
	m.Handle(procPrepare, d.prepare)
	m.Handle(procFinish, d.finish)
	m.Handle(procQuery, d.query)
	return m
}

// prepare readies the destination and opens the tunnel stream. The reply
// goes out first, then the memory flows into receive.
func (d *destination) prepare(ctx context.Context, req *rpc.Request) ([]byte, error) {
	var a prepareArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, err
	}
	reply, err := xdr.Marshal(prepareRet{Cookie: fmt.Sprintf("dst:%s:incoming:%d", a.Name, a.Size)})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.in != nil {
		return nil, rpc.NewError(frame.CodeOperationFailed, "%s: a migration is already incoming", d.in.name)
	}
	st, err := req.Stream(stream.Upload, nil) // the source uploads
	if err != nil {
		return nil, err
	}
	in := &incoming{name: a.Name, done: make(chan struct{})}
	d.in = in
	d.wg.Go(func() { in.receive(st, d.tamper) })
	return reply, nil
}

// receive hashes the guest memory as it arrives (a real destination would
// hand it to the incoming QEMU).
func (in *incoming) receive(st *stream.Stream, tamper func(int64, []byte) []byte) {
	defer close(in.done)
	h := sha256.New()
	n, err := st.WriteTo(writerFunc(func(p []byte) (int, error) {
		q := p
		if tamper != nil {
			q = tamper(in.received.Load(), p)
		}
		h.Write(q)
		in.received.Add(int64(len(p)))
		return len(p), nil
	}))
	// After the end of the data, Close acknowledges it: the source's Close
	// returns nil, the verdict that every byte was consumed. After an abort
	// it only lets go of the stream.
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	in.n, in.sum, in.err = n, h.Sum(nil), err
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// finish compares what arrived with the source's digest; only a match
// lets the guest run here.
func (d *destination) finish(ctx context.Context, req *rpc.Request) ([]byte, error) {
	var a finishArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, err
	}
	d.mu.Lock()
	in := d.in
	if in != nil && in.name == a.Name {
		d.in = nil
	}
	d.mu.Unlock()
	if in == nil || in.name != a.Name {
		return nil, rpc.NewError(frame.CodeOperationFailed, "%s: no incoming migration", a.Name)
	}
	select {
	case <-in.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case in.err != nil:
		return nil, fmt.Errorf("%s: receiving guest memory: %w", a.Name, in.err)
	case in.n != int64(a.Bytes):
		return nil, rpc.NewError(frame.CodeOperationFailed, "%s: received %d bytes, the source sent %d", a.Name, in.n, a.Bytes)
	case !bytes.Equal(in.sum, a.Digest[:]):
		return nil, rpc.NewError(frame.CodeOperationFailed, "%s: sha256 mismatch: received %x, the source sent %x", a.Name, in.sum, a.Digest)
	}
	return xdr.Marshal(finishRet{Cookie: fmt.Sprintf("dst:%s:running", a.Name)})
}

// query reports the incoming migration's status.
func (d *destination) query(ctx context.Context, req *rpc.Request) ([]byte, error) {
	d.mu.Lock()
	in := d.in
	d.mu.Unlock()
	r := queryRet{Status: "none"}
	if in != nil {
		r.Status, r.Received = "active", uint64(in.received.Load())
		select {
		case <-in.done:
			r.Status = "completed"
		default:
		}
	}
	return xdr.Marshal(r)
}

// outcome is what the source measured.
type outcome struct {
	bytes    int64
	dur      time.Duration // Prepare until the destination's verdict
	sum      []byte
	p50, p99 time.Duration // of the status call during the transfer
	calls    int
}

// migrate runs the phases on the source host over conn, reporting each on
// out and the transfer's progress on progressW (nil: none).
func migrate(ctx context.Context, cfg config, conn *rpc.Conn, out, progressW io.Writer) (*outcome, error) {
	const vm = "guest-01"
	// Begin (local): describe the guest; its cookie goes to Prepare.
	size := byteSize(cfg.size)
	fmt.Fprintf(out, "begin     %s, %s of guest memory (seed %d)\n", vm, &size, cfg.seed)
	begin := fmt.Sprintf("src:%s:mem=%d", vm, cfg.size)

	// Prepare (destination): the call opens the tunnel stream.
	start := time.Now()
	args, err := xdr.Marshal(prepareArgs{Name: vm, Size: uint64(cfg.size), Cookie: begin})
	if err != nil {
		return nil, err
	}
	st, reply, err := conn.OpenStream(ctx, procPrepare, args, stream.Upload, nil)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	var pr prepareRet
	if err := xdr.Unmarshal(reply, &pr); err != nil {
		_ = st.CloseWithError(err)
		return nil, fmt.Errorf("prepare: %w", err)
	}
	fmt.Fprintf(out, "prepare   destination ready, tunnel stream open (cookie %q)\n", pr.Cookie)

	// Perform (source): pump the guest memory into the stream, hashing it
	// on the way, while polling the status over the same connection.
	lat := &latencies{}
	stopPolling := poll(ctx, conn, lat)
	bar := startProgress(progressW, "perform", cfg.size, st.BytesSent)
	stopAbort := context.AfterFunc(ctx, func() {
		_ = st.CloseWithError(errors.New("migration cancelled on the source"))
	})
	h := sha256.New()
	n, err := st.ReadFrom(io.TeeReader(newGuestMem(cfg.size, cfg.seed), h))
	if err == nil {
		err = st.Close() // waits for the destination's verdict
	} else {
		_ = st.CloseWithError(err)
	}
	dur := time.Since(start)
	stopAbort()
	bar.Stop()
	stopPolling()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("perform: %w", context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("perform: %w", err)
	}
	if err := lat.failure(); err != nil {
		return nil, fmt.Errorf("perform: control call during the stream: %w", err)
	}
	o := &outcome{bytes: n, dur: dur, sum: h.Sum(nil)}
	o.p50, o.p99, o.calls = lat.percentiles()
	fmt.Fprintf(out, "perform   %d bytes sent, all consumed by the destination\n", n)

	// Finish (destination): it verifies the digest and runs the guest.
	fa := finishArgs{Name: vm, Bytes: uint64(n), Cookie: pr.Cookie}
	copy(fa.Digest[:], o.sum)
	var fr finishRet
	if err := conn.CallXDR(ctx, procFinish, fa, &fr); err != nil {
		return nil, fmt.Errorf("finish: %w", err)
	}
	fmt.Fprintf(out, "finish    destination verified sha256 %x…, %s running there (cookie %q)\n", o.sum[:8], vm, fr.Cookie)

	// Confirm (local): with the destination's cookie, the source guest is
	// stopped for good.
	fmt.Fprintf(out, "confirm   %s stopped on the source; migration complete\n", vm)
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
				if ctx.Err() == nil {
					lat.fail(err) // a control call that fails fails the run
				}
				return
			}
			lat.add(time.Since(t0))
		}
	}()
	return func() { cancel(); <-done }
}
