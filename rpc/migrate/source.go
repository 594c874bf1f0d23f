package migrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// StreamInfo describes one stream of a migration.
type StreamInfo struct {
	// Name identifies the stream in progress reports and errors, for
	// example "main", "multifd-2" or "disk-vda"; unique in a migration.
	Name string
	// Size is the data expected, in bytes, for the remaining-time
	// estimate; 0 is unknown.
	Size int64
	// Sparse keeps holes: a source reader that is a file with holes
	// (an *os.File) sends them as holes, never reading them, and a
	// destination writer that can seek skips over them, so a disk image
	// arrives as sparse as it left (stream.Options.Sparse).
	Sparse bool
}

// Plan is what the source's Begin decides: its cookie for the destination's
// Prepare and the streams of the migration.
type Plan struct {
	Cookie  []byte // opaque to the helper; at most 1 MiB
	Streams []StreamInfo
}

// SourceDriver is the source host's part of each phase. The helper calls
// each method at most once, from the goroutine running Outgoing.Run.
type SourceDriver interface {
	// Begin describes the migration.
	Begin(ctx context.Context) (Plan, error)
	// Perform is called once the destination is prepared (cookie is its
	// Prepare cookie) and the tunnel streams are open. It returns one
	// reader per stream of the plan, in order; the helper pumps each to
	// io.EOF into its stream. A reader that is an io.Closer is closed if
	// the migration fails, which unblocks a pending Read. ctx ends when
	// the migration fails.
	Perform(ctx context.Context, cookie []byte) ([]io.Reader, error)
	// Confirm ends the migration on the source. failed is nil when the
	// destination took the guest over (cookie is its Finish cookie): stop
	// the guest here for good. Otherwise the migration failed (failed is
	// an *Error, cookie nil): resume the guest here. Confirm is called
	// for every migration whose Begin succeeded, with a ctx that the
	// caller's cancellation does not end (bounded by
	// OutgoingOptions.CleanupTimeout).
	Confirm(ctx context.Context, cookie []byte, failed error) error
}

// PerformCookier is a SourceDriver with a cookie for the destination's
// Finish, as libvirt's Perform returns one: PerformCookie is called once
// every stream has been pumped and acknowledged, and its cookie arrives as
// Incoming.PerformCookie before the destination's Finish (for example a
// digest of what was sent).
type PerformCookier interface {
	PerformCookie(ctx context.Context) ([]byte, error)
}

// OutgoingOptions configure a migration on the source. The zero value (or
// nil) means the documented defaults.
type OutgoingOptions struct {
	// ID names the migration on both hosts. Default: 16 random hex digits.
	ID string
	// Limit is the bandwidth limit in bytes per second over all streams
	// together; 0 (the default) is none. Outgoing.SetLimit changes it.
	Limit int64
	// OnProgress, if not nil, is called every ProgressInterval during
	// Perform, and once more when the streams have ended. It must not
	// block for long.
	OnProgress func(Progress)
	// ProgressInterval: default 1 s.
	ProgressInterval time.Duration
	// CleanupTimeout bounds what runs after a failure or cancellation:
	// telling the destination, and Confirm. Default 10 s.
	CleanupTimeout time.Duration
}

// Outgoing is one migration on the source host, driven by Run. Its
// methods are safe for concurrent use.
type Outgoing struct {
	conn  *rpc.Conn
	drv   SourceDriver
	opts  OutgoingOptions
	limit *bucket

	mu      sync.Mutex
	started bool
	cancel  context.CancelCauseFunc // Run's ctx
	meter   *meter
	err     *Error // the first failure
	phase   Phase
	streams []*stream.Stream
	closers []io.Closer
}

// NewOutgoing returns a migration from this host to the destination that
// conn reaches (the peer has a Receiver registered on its Mux). Run starts it.
func NewOutgoing(conn *rpc.Conn, drv SourceDriver, opts *OutgoingOptions) *Outgoing {
	o := &Outgoing{conn: conn, drv: drv}
	if opts != nil {
		o.opts = *opts
	}
	if o.opts.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.opts.ID = hex.EncodeToString(b[:])
	}
	if o.opts.CleanupTimeout <= 0 {
		o.opts.CleanupTimeout = 10 * time.Second
	}
	o.limit = newBucket(o.opts.Limit)
	o.meter = newMeter(nil, o.limit.Limit)
	return o
}

// ID returns the migration's name.
func (o *Outgoing) ID() string { return o.opts.ID }

// SetLimit changes the bandwidth limit (bytes per second, all streams
// together; 0 is none) at once, also while Perform runs.
func (o *Outgoing) SetLimit(bytesPerSecond int64) { o.limit.setLimit(bytesPerSecond) }

// Progress returns a snapshot of the transfer.
func (o *Outgoing) Progress() Progress {
	o.mu.Lock()
	m := o.meter
	o.mu.Unlock()
	return m.snapshot()
}

func (o *Outgoing) setPhase(p Phase) {
	o.mu.Lock()
	o.phase = p
	o.meter.setPhase(p)
	o.mu.Unlock()
}

// fail records the migration's first failure and aborts what runs: the
// streams (the destination learns e at once), the readers, the ctx of the
// driver's calls. Later failures are consequences and are dropped.
func (o *Outgoing) fail(e *Error) *Error {
	o.mu.Lock()
	if o.err != nil {
		e = o.err
		o.mu.Unlock()
		return e
	}
	o.err = e
	streams, closers, cancel := o.streams, o.closers, o.cancel
	o.mu.Unlock()
	// The streams carry e to the destination first, before anything that
	// ending the readers or the ctx makes fail can reach it as a reason.
	for _, st := range streams {
		_ = st.CloseWithError(e.wire())
	}
	for _, c := range closers {
		_ = c.Close()
	}
	cancel(e)
	return e
}

// failed records err, seen in phase; once ctx has ended, the failure is
// the cancellation, whatever error it caused.
func (o *Outgoing) failed(ctx context.Context, phase Phase, err error) *Error {
	if cause := context.Cause(ctx); cause != nil {
		var e *Error
		if errors.As(cause, &e) {
			return o.fail(e)
		}
		err = fmt.Errorf("cancelled: %w", cause)
	}
	var ce *rpc.ClosedError
	if _, peers := fromWire(err); !peers && errors.As(err, &ce) {
		err = fmt.Errorf("connection to the destination lost: %w", ce)
	}
	return o.fail(classify(phase, Source, err))
}

func (o *Outgoing) currentPhase() Phase {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.phase
}

// Run migrates: Begin, Prepare, Perform, Finish, Confirm. It returns nil
// once the destination took the guest over and Confirm succeeded, or the
// first failure as an *Error naming the phase and the side. Cancelling ctx
// cancels the migration: the destination learns it at once, discards what
// it received, and Confirm is called with the failure. Run leaves no
// goroutine behind. Run runs once; a second call returns an error.
func (o *Outgoing) Run(ctx context.Context) error {
	o.mu.Lock()
	again := o.started
	o.started = true
	o.mu.Unlock()
	if again {
		return errors.New("migrate: Outgoing.Run called twice")
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	o.mu.Lock()
	o.cancel = cancel
	o.mu.Unlock()
	stopCancel := context.AfterFunc(ctx, func() { o.failed(ctx, o.currentPhase(), nil) })
	defer stopCancel()
	failed := func(phase Phase, err error) *Error { return o.failed(ctx, phase, err) }

	o.setPhase(Begin)
	plan, err := o.drv.Begin(ctx)
	if err == nil {
		err = checkPlan(plan)
	}
	if err != nil {
		e := failed(Begin, err)
		o.tellDestination(parent, ProcAbort, e)
		return e
	}
	o.mu.Lock()
	o.meter = newMeter(plan.Streams, o.limit.Limit)
	o.mu.Unlock()

	cookie, err := o.runUntilFinish(ctx, plan, failed)
	o.setPhase(Confirm)
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(parent), o.opts.CleanupTimeout)
	defer ccancel()
	if err != nil {
		e := failed(o.currentPhase(), err)
		o.tellDestination(parent, ProcAbort, e)
		_ = o.drv.Confirm(cctx, nil, e) // the first failure is what is reported
		return e
	}
	if err := o.drv.Confirm(cctx, cookie, nil); err != nil {
		e := failed(Confirm, err)
		o.tellDestination(parent, ProcConfirm, e)
		return e
	}
	o.tellDestination(parent, ProcConfirm, nil)
	return nil
}

func checkPlan(p Plan) error {
	switch {
	case len(p.Streams) == 0:
		return errors.New("the plan has no stream")
	case len(p.Streams) > maxStreams:
		return fmt.Errorf("the plan has %d streams, more than %d", len(p.Streams), maxStreams)
	case len(p.Cookie) > maxCookie:
		return fmt.Errorf("the cookie has %d bytes, more than %d", len(p.Cookie), maxCookie)
	}
	seen := map[string]bool{}
	var total int64
	for _, s := range p.Streams {
		if s.Name == "" || len(s.Name) > 256 || seen[s.Name] {
			return fmt.Errorf("stream name %q: empty, too long or not unique", s.Name)
		}
		seen[s.Name] = true
		// Sizes are the source's word: a negative one, or a sum that
		// overflows, made the progress's total and remaining time nonsense.
		if s.Size < 0 || s.Size > maxSize-total {
			return fmt.Errorf("stream %s: a size of %d bytes (0 is unknown; all streams together at most %d)", s.Name, s.Size, int64(maxSize))
		}
		total += s.Size
	}
	return nil
}

// runUntilFinish runs Prepare, Perform and Finish and returns the
// destination's Finish cookie. An error has been recorded with fail.
func (o *Outgoing) runUntilFinish(ctx context.Context, plan Plan, failed func(Phase, error) *Error) ([]byte, error) {
	o.setPhase(Prepare)
	args := prepareArgs{ID: o.opts.ID, Cookie: plan.Cookie}
	for _, s := range plan.Streams {
		args.Streams = append(args.Streams, wireStream(s))
	}
	var pr cookieRet
	if err := o.conn.CallXDR(ctx, ProcPrepare, args, &pr); err != nil {
		return nil, failed(Prepare, err)
	}

	// The destination's failures reach us through WATCH, whatever we are
	// doing (a Read of QEMU's socket may block for long).
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		err := o.conn.CallXDR(wctx, ProcWatch, idArgs{ID: o.opts.ID}, nil)
		if err != nil && wctx.Err() == nil {
			failed(o.currentPhase(), err)
		}
	}()
	defer func() { stopWatch(); <-watched }()

	for i, s := range plan.Streams {
		st, err := o.openTunnel(ctx, uint32(i), s.Sparse)
		if err != nil {
			return nil, failed(Prepare, fmt.Errorf("opening stream %s: %w", s.Name, err))
		}
		o.mu.Lock()
		o.streams = append(o.streams, st)
		aborted := o.err
		o.mu.Unlock()
		if aborted != nil { // fail ran before st was listed
			_ = st.CloseWithError(aborted.wire())
			return nil, aborted
		}
	}

	o.setPhase(Perform)
	sent, err := o.perform(ctx, plan, pr.Cookie)
	if err != nil {
		return nil, failed(Perform, err)
	}

	fa := finishArgs{ID: o.opts.ID, Sent: sent}
	if pc, ok := o.drv.(PerformCookier); ok {
		if fa.Cookie, err = pc.PerformCookie(ctx); err == nil && len(fa.Cookie) > maxCookie {
			err = fmt.Errorf("the Perform cookie has %d bytes, more than %d", len(fa.Cookie), maxCookie)
		}
		if err != nil {
			return nil, failed(Perform, err)
		}
	}

	o.setPhase(Finish)
	var fr cookieRet
	if err := o.conn.CallXDR(ctx, ProcFinish, fa, &fr); err != nil {
		return nil, failed(Finish, err)
	}
	return fr.Cookie, nil
}

// openTunnel opens stream i of the migration (the one place the source
// opens streams).
func (o *Outgoing) openTunnel(ctx context.Context, i uint32, sparse bool) (*stream.Stream, error) {
	args, err := xdr.Marshal(tunnelArgs{ID: o.opts.ID, Index: i})
	if err != nil {
		return nil, err
	}
	st, _, err := o.conn.OpenStream(ctx, ProcTunnel, args, stream.Upload, &stream.Options{Sparse: sparse})
	return st, err
}

// perform pumps the driver's readers into the streams and returns the data
// bytes each carried.
func (o *Outgoing) perform(ctx context.Context, plan Plan, cookie []byte) ([]int64, error) {
	m := o.meter
	m.begin()
	stopReport := m.report(o.opts.OnProgress, o.opts.ProgressInterval)
	defer stopReport()
	defer m.stop()

	readers, err := o.drv.Perform(ctx, cookie)
	if err == nil && len(readers) != len(plan.Streams) {
		err = fmt.Errorf("the driver's Perform returned %d readers for %d streams", len(readers), len(plan.Streams))
	}
	if err != nil {
		closeAll(readers)
		return nil, err
	}
	o.mu.Lock()
	for _, r := range readers {
		if c, ok := r.(io.Closer); ok {
			o.closers = append(o.closers, c)
		}
	}
	aborted := o.err
	o.mu.Unlock()
	if aborted != nil {
		closeAll(readers)
		return nil, aborted
	}

	errs := make([]error, len(readers))
	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Go(func() {
			defer m.done[i].Store(true)
			st := o.streams[i]
			err := pump(st, pumpReader(ctx, r, plan.Streams[i].Sparse, &m.counts[i], o.limit), plan.Streams[i].Sparse)
			if err == nil {
				err = st.Finish(ctx) // the destination's verdict
			}
			if err != nil {
				errs[i] = fmt.Errorf("stream %s: %w", plan.Streams[i].Name, err)
				o.failed(ctx, Perform, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sent := make([]int64, len(readers))
	for i := range sent {
		sent[i] = o.streams[i].BytesSent() // data only, as the destination counts
	}
	return sent, nil
}

func closeAll(rs []io.Reader) {
	for _, r := range rs {
		if c, ok := r.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// tellDestination sends CONFIRM or ABORT with the outcome, bounded by the
// cleanup timeout whatever happened to the caller's ctx. A destination
// that cannot be told learns it from the connection closing.
func (o *Outgoing) tellDestination(parent context.Context, p rpc.Procedure, e *Error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), o.opts.CleanupTimeout)
	defer cancel()
	_ = o.conn.CallXDR(ctx, p, outcomeArgs{ID: o.opts.ID, Failed: toFailure(e)}, nil)
}
