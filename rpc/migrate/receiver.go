package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// DestinationDriver is the destination host's part of each phase. The
// helper calls it from one goroutine per incoming migration.
type DestinationDriver interface {
	// Prepare readies this host for in (the source's cookie and streams)
	// and returns its cookie for the source and one writer per stream, in
	// order, that the stream's data is written to (a writer that can
	// seek skips the holes of a sparse stream). ctx ends when the
	// migration fails; if Prepare returns an error, it has cleaned up.
	Prepare(ctx context.Context, in *Incoming) (cookie []byte, sinks []io.Writer, err error)
	// Finish is called once for every migration whose Prepare succeeded.
	// With failed nil, every stream has arrived whole: take the guest
	// over and return the cookie for the source's Confirm; if ctx ends
	// meanwhile, the source aborted: discard and return an error. With
	// failed non-nil (an *Error), the migration failed: discard what
	// arrived (a writer may still be in a Write; closing it unblocks
	// that); the cookie is ignored. If an aborted source learns too late
	// that a Finish succeeded, Finish is called a second time with the
	// failure, since the source then resumes the guest.
	Finish(ctx context.Context, in *Incoming, failed error) (cookie []byte, err error)
}

// ReceiverOptions configure a Receiver. The zero value (or nil) means the
// documented defaults.
type ReceiverOptions struct {
	// OnDone, if not nil, is called once per migration when it is over on
	// this host: err nil once the source confirmed, else the first
	// failure, an *Error (also for a migration that failed in the
	// source's Begin, before any Prepare: in then has only its ID).
	OnDone func(in *Incoming, err error)
	// OnProgress, if not nil, is called every ProgressInterval during
	// Perform, and once when the streams have ended.
	OnProgress func(in *Incoming, p Progress)
	// ProgressInterval: default 1 s.
	ProgressInterval time.Duration
	// CleanupTimeout bounds the Finish call that cleans up after a
	// failure. Default 10 s.
	CleanupTimeout time.Duration
	// IdleTimeout fails a migration whose source, after Prepare, neither
	// opens a stream nor sends a byte for this long before its FINISH (a
	// source that went silent on a live connection). Default 2 min;
	// negative: wait for ever.
	IdleTimeout time.Duration
	// MaxIncoming bounds the migrations incoming at once, over all
	// connections: each holds its cookie (up to 1 MiB), its streams and
	// what the driver's Prepare started. More Prepares are refused.
	// Default 16.
	MaxIncoming int
}

// Receiver is the destination host's side of the migration program: it
// serves the procedures that Register puts on a Mux, for any number of
// incoming migrations on any number of connections.
type Receiver struct {
	drv  DestinationDriver
	opts ReceiverOptions
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool
	in     map[string]*Incoming
	ended  map[string]ended // recent outcomes, for a late WATCH or ABORT
	order  []string         // of ended, oldest first
}

// ended is how a migration ended. An ABORT that arrived before its
// migration's PREPARE was served (the source cancelled while its PREPARE
// was on the way: handlers run concurrently) keeps its connection and
// serial, so that the PREPARE sent before it is refused, not served to a
// source that has gone.
type ended struct {
	err         *Error
	abortConn   *rpc.Conn
	abortSerial uint32
}

// remembered is how many ended migrations a Receiver remembers.
const remembered = 64

// NewReceiver returns a Receiver that drives drv.
func NewReceiver(drv DestinationDriver, opts *ReceiverOptions) *Receiver {
	r := &Receiver{drv: drv, in: map[string]*Incoming{}, ended: map[string]ended{}}
	if opts != nil {
		r.opts = *opts
	}
	if r.opts.CleanupTimeout <= 0 {
		r.opts.CleanupTimeout = 10 * time.Second
	}
	if r.opts.IdleTimeout == 0 {
		r.opts.IdleTimeout = 2 * time.Minute
	}
	if r.opts.MaxIncoming <= 0 {
		r.opts.MaxIncoming = 16
	}
	return r
}

// Register puts the migration program's procedures on m.
func (r *Receiver) Register(m *rpc.Mux) {
	m.Handle(ProcPrepare, r.prepare)
	m.Handle(ProcTunnel, r.tunnel)
	m.Handle(ProcWatch, r.watch)
	m.Handle(ProcFinish, r.finish)
	m.Handle(ProcConfirm, r.confirm)
	m.Handle(ProcAbort, r.abort)
}

// Incoming returns the migration named id while it runs, or nil.
func (r *Receiver) Incoming(id string) *Incoming {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.in[id]
}

// Cancel fails the incoming migration id with reason: its streams are
// aborted and the source learns it at once. It reports whether id was
// running.
func (r *Receiver) Cancel(id string, reason error) bool {
	in := r.Incoming(id)
	if in == nil {
		return false
	}
	in.fail(&Error{Phase: in.Phase(), Side: Destination, Err: reason})
	return true
}

// Close cancels every incoming migration and waits until they have been
// cleaned up. Later Prepare calls are refused.
func (r *Receiver) Close() error {
	r.mu.Lock()
	r.closed = true
	ins := make([]*Incoming, 0, len(r.in))
	for _, in := range r.in {
		ins = append(ins, in)
	}
	r.mu.Unlock()
	for _, in := range ins {
		in.fail(&Error{Phase: in.Phase(), Side: Destination, Err: errors.New("the receiver was closed")})
	}
	r.wg.Wait()
	return nil
}

// lookup returns the migration id, or an *Error (phase p, on the
// destination) saying why there is none.
func (r *Receiver) lookup(id string, p Phase, req *rpc.Request) (*Incoming, *Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in := r.in[id]; in != nil && in.conn == req.Conn() {
		return in, nil
	} else if in != nil {
		// Only the connection that prepared a migration may drive it:
		// another peer that knows its ID must not open its streams (and
		// write into the guest) or end it.
		return nil, &Error{Phase: p, Side: Destination, Err: fmt.Errorf("no migration %s on this connection", id)}
	}
	if ent, ok := r.ended[id]; ok {
		if ent.err != nil {
			return nil, ent.err
		}
		return nil, &Error{Phase: p, Side: Destination, Err: fmt.Errorf("migration %s is over", id)}
	}
	return nil, &Error{Phase: p, Side: Destination, Err: fmt.Errorf("no migration %s", id)}
}

// remember records how a migration ended and forgets the oldest.
func (r *Receiver) rememberLocked(id string, e *Error) {
	if _, ok := r.ended[id]; !ok {
		r.order = append(r.order, id)
	}
	r.ended[id] = ended{err: e}
	for len(r.order) > remembered {
		delete(r.ended, r.order[0])
		r.order = r.order[1:]
	}
}

func (r *Receiver) prepare(ctx context.Context, req *rpc.Request) ([]byte, error) {
	var a prepareArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, (&Error{Phase: Prepare, Side: Destination, Err: err}).wire()
	}
	in := &Incoming{ID: a.ID, Cookie: a.Cookie, r: r, conn: req.Conn()}
	for _, s := range a.Streams {
		in.Streams = append(in.Streams, StreamInfo(s))
	}
	err := checkPlan(Plan{Cookie: a.Cookie, Streams: in.Streams})
	if err == nil && a.ID == "" {
		err = errors.New("empty migration ID")
	}
	if err != nil {
		return nil, (&Error{Phase: Prepare, Side: Destination, Err: err}).wire()
	}
	in.init()
	r.mu.Lock()
	switch {
	case r.closed:
		err = errors.New("the receiver was closed")
	case r.in[a.ID] != nil:
		err = fmt.Errorf("migration %s is already incoming", a.ID)
	case r.abortedBeforeLocked(a.ID, req):
		err = fmt.Errorf("the source aborted migration %s before its Prepare arrived: %v", a.ID, r.ended[a.ID].err)
	case len(r.in) >= r.opts.MaxIncoming:
		err = fmt.Errorf("%d migrations are already incoming (ReceiverOptions.MaxIncoming)", len(r.in))
	default:
		r.in[a.ID] = in
		delete(r.ended, a.ID)
		r.wg.Go(in.run)
		r.wg.Go(in.watchConn)
	}
	r.mu.Unlock()
	if err != nil {
		return nil, (&Error{Phase: Prepare, Side: Destination, Err: err}).wire()
	}
	select {
	case res := <-in.prepared:
		if res.err != nil {
			return nil, res.err.wire()
		}
		return xdr.Marshal(cookieRet{Cookie: res.cookie})
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *Receiver) tunnel(ctx context.Context, req *rpc.Request) ([]byte, error) {
	var a tunnelArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, (&Error{Phase: Prepare, Side: Destination, Err: err}).wire()
	}
	in, e := r.lookup(a.ID, Prepare, req)
	if e != nil {
		return nil, e.wire()
	}
	if err := in.openStream(req, a.Index); err != nil {
		return nil, err.wire()
	}
	return nil, nil
}

func (r *Receiver) watch(ctx context.Context, req *rpc.Request) ([]byte, error) {
	var a idArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, (&Error{Phase: Perform, Side: Destination, Err: err}).wire()
	}
	in, e := r.lookup(a.ID, Perform, req)
	if e != nil {
		return nil, e.wire()
	}
	select {
	case <-in.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e := in.failure(); e != nil {
		return nil, e.wire()
	}
	return nil, nil
}

func (r *Receiver) finish(ctx context.Context, req *rpc.Request) ([]byte, error) {
	var a finishArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, (&Error{Phase: Finish, Side: Destination, Err: err}).wire()
	}
	in, e := r.lookup(a.ID, Finish, req)
	if e != nil {
		return nil, e.wire()
	}
	rep := make(chan finishResult, 1)
	select {
	case in.finishReq <- finishReq{sent: a.Sent, cookie: a.Cookie, reply: rep}:
	case <-in.done:
		return nil, in.failureOr(Finish).wire()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-rep:
		if res.err != nil {
			return nil, res.err.wire()
		}
		return xdr.Marshal(cookieRet{Cookie: res.cookie})
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// confirm and abort carry the source's outcome: CONFIRM after its Confirm
// (a failure there is reported, the guest stays here), ABORT when the
// migration failed before it took the guest over (this host discards).
func (r *Receiver) confirm(ctx context.Context, req *rpc.Request) ([]byte, error) {
	return r.outcome(req, false)
}

func (r *Receiver) abort(ctx context.Context, req *rpc.Request) ([]byte, error) {
	return r.outcome(req, true)
}

func (r *Receiver) outcome(req *rpc.Request, abort bool) ([]byte, error) {
	var a outcomeArgs
	if err := xdr.Unmarshal(req.Payload, &a); err != nil {
		return nil, (&Error{Phase: Confirm, Side: Destination, Err: err}).wire()
	}
	var e *Error
	if a.Failed != nil {
		e = a.Failed.err()
	}
	r.mu.Lock()
	in := r.in[a.ID]
	_, known := r.ended[a.ID]
	if in != nil && in.conn != req.Conn() { // see lookup
		r.mu.Unlock()
		return nil, (&Error{Phase: Confirm, Side: Destination, Err: fmt.Errorf("no migration %s on this connection", a.ID)}).wire()
	}
	if in == nil && !known && abort && e != nil && len(a.ID) <= maxID {
		// A migration that failed before its Prepare (in Begin): nothing
		// to clean up, but the destination hears of it.
		r.rememberLocked(a.ID, e)
		r.ended[a.ID] = ended{err: e, abortConn: req.Conn(), abortSerial: req.Header.Serial}
		r.mu.Unlock()
		if r.opts.OnDone != nil {
			r.opts.OnDone(&Incoming{ID: a.ID}, e)
		}
		return nil, nil
	}
	r.mu.Unlock()
	if in != nil {
		if err := in.outcome(e, abort); err != nil {
			return nil, err.wire()
		}
	}
	return nil, nil
}

// abortedBeforeLocked reports whether the source aborted migration id, on
// req's connection, in a call it sent after req.
func (r *Receiver) abortedBeforeLocked(id string, req *rpc.Request) bool {
	ent, ok := r.ended[id]
	return ok && ent.abortConn != nil && ent.abortConn == req.Conn() && ent.abortSerial > req.Header.Serial
}

// acceptTunnel opens the stream of a TUNNEL call (the one place the
// destination opens streams).
func acceptTunnel(req *rpc.Request, sparse bool) (*stream.Stream, error) {
	return req.Stream(stream.Upload, &stream.Options{Sparse: sparse}) // the source sends
}
