package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// Incoming is one migration arriving at a Receiver. Its exported fields
// are what the source announced in Prepare; do not modify them.
type Incoming struct {
	ID      string
	Cookie  []byte // the source's, from its Begin
	Streams []StreamInfo
	// PerformCookie is the source's cookie after Perform (see
	// PerformCookier), set before Finish is called without failure.
	PerformCookie []byte

	r      *Receiver
	conn   *rpc.Conn
	meter  *meter
	ctx    context.Context // ends when the migration fails
	cancel context.CancelCauseFunc

	prepared  chan prepareResult // run → PREPARE
	finishReq chan finishReq     // FINISH → run
	outcomes  chan outcome       // CONFIRM and ABORT → run
	allEnded  chan struct{}      // closed when every stream has ended
	done      chan struct{}      // closed when the migration is over here
	streamsWG sync.WaitGroup

	mu      sync.Mutex
	settled bool        // the source's CONFIRM or ABORT arrived
	err     *Error      // the first failure
	sinks   []io.Writer // per stream, set once Prepare returned
	opened  []bool
	streams []*stream.Stream
	ended   int
}

type (
	prepareResult struct {
		cookie []byte
		err    *Error
	}
	finishReq struct {
		sent   []int64
		cookie []byte
		reply  chan finishResult
	}
	finishResult struct {
		cookie []byte
		err    *Error
	}
	outcome struct {
		err   *Error
		abort bool
	}
)

func (in *Incoming) init() {
	in.meter = newMeter(in.Streams, nil)
	in.ctx, in.cancel = context.WithCancelCause(context.Background())
	in.prepared = make(chan prepareResult, 1)
	in.finishReq = make(chan finishReq)
	in.outcomes = make(chan outcome, 1)
	in.allEnded = make(chan struct{})
	in.done = make(chan struct{})
	in.opened = make([]bool, len(in.Streams))
	in.streams = make([]*stream.Stream, len(in.Streams))
}

// Progress returns a snapshot of the data received.
func (in *Incoming) Progress() Progress {
	if in.meter == nil {
		return Progress{}
	}
	return in.meter.snapshot()
}

// Phase returns the phase the migration is in on this host.
func (in *Incoming) Phase() Phase {
	if in.meter == nil {
		return Begin
	}
	return Phase(in.meter.phase.Load())
}

func (in *Incoming) setPhase(p Phase) { in.meter.setPhase(p) }

// Done is closed when the migration is over on this host.
func (in *Incoming) Done() <-chan struct{} { return in.done }

// Err returns the migration's first failure (an *Error), or nil.
func (in *Incoming) Err() error {
	if e := in.failure(); e != nil {
		return e
	}
	return nil
}

func (in *Incoming) failure() *Error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.err
}

func (in *Incoming) failureOr(p Phase) *Error {
	if e := in.failure(); e != nil {
		return e
	}
	return &Error{Phase: p, Side: Destination, Err: errors.New("the migration is over")}
}

// fail records the first failure and aborts the streams; run then cleans
// up. It returns the failure that stands. Once the source's outcome has
// arrived (settled), only that outcome may still be recorded: the source
// hanging up after its CONFIRM is no failure.
func (in *Incoming) fail(e *Error) *Error { return in.record(e, false) }

func (in *Incoming) record(e *Error, outcome bool) *Error {
	in.mu.Lock()
	e, streams, first := in.recordLocked(e, outcome)
	in.mu.Unlock()
	if first {
		in.stop(e, streams)
	}
	return e
}

// recordLocked keeps e as the migration's failure unless it has one (or
// is settled and e is no outcome); first says whether it was kept, and
// then stop must follow with the streams it returns.
func (in *Incoming) recordLocked(e *Error, outcome bool) (_ *Error, streams []*stream.Stream, first bool) {
	if in.err != nil || (in.settled && !outcome) {
		if in.err != nil {
			e = in.err
		}
		return e, nil, false
	}
	in.err = e
	return e, append([]*stream.Stream(nil), in.streams...), true
}

// stop carries e to the source on the streams, then ends the ctx. The
// streams go first: the ctx wakes run, whose cleanup (the driver's Finish)
// closes the sinks, and a stream whose sink failed first would tell the
// source that instead (QEMU's "migration channel closed" in place of a
// cancel's reason).
func (in *Incoming) stop(e *Error, streams []*stream.Stream) {
	for _, st := range streams {
		if st != nil {
			_ = st.CloseWithError(e.wire())
		}
	}
	in.cancel(e)
}

// watchConn fails the migration when the source's connection closes.
func (in *Incoming) watchConn() {
	select {
	case <-in.conn.Done():
		in.fail(&Error{Phase: in.Phase(), Side: Destination, Err: fmt.Errorf("connection to the source lost: %w", in.conn.Err())})
	case <-in.done:
	}
}

// openStream takes the stream of TUNNEL call i and starts feeding its sink.
func (in *Incoming) openStream(req *rpc.Request, i uint32) *Error {
	in.mu.Lock()
	switch {
	case in.err != nil:
		in.mu.Unlock()
		return in.err
	case in.sinks == nil:
		in.mu.Unlock()
		return &Error{Phase: Prepare, Side: Destination, Err: errors.New("stream opened before Prepare returned")}
	case int(i) >= len(in.Streams) || in.opened[i]:
		in.mu.Unlock()
		return &Error{Phase: Prepare, Side: Destination, Err: fmt.Errorf("stream %d: no such stream, or opened twice", i)}
	}
	in.opened[i] = true
	in.mu.Unlock()

	info := in.Streams[i]
	st, err := acceptTunnel(req, info.Sparse)
	if err != nil {
		return in.fail(&Error{Phase: Prepare, Side: Destination, Err: fmt.Errorf("stream %s: %w", info.Name, err)})
	}
	in.mu.Lock()
	if e := in.err; e != nil {
		in.mu.Unlock()
		_ = st.CloseWithError(e.wire())
		return e
	}
	in.streams[i] = st
	sink := in.sinks[i]
	in.streamsWG.Add(1)
	in.mu.Unlock()
	in.r.wg.Go(func() {
		defer in.streamsWG.Done()
		in.receive(st, int(i), sink)
	})
	return nil
}

// receive writes stream i to its sink until the source finishes.
func (in *Incoming) receive(st *stream.Stream, i int, sink io.Writer) {
	info := in.Streams[i]
	_, err := st.WriteTo(sinkWriter(sink, info.Sparse, &in.meter.counts[i]))
	// After the end of the data Close acknowledges it; after an abort it
	// lets go of the stream.
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	in.meter.done[i].Store(true)
	_, peerFailed := fromWire(err)
	switch {
	case err != nil && !peerFailed && in.conn.Err() != nil: // the connection, not the stream
		in.fail(&Error{Phase: in.Phase(), Side: Destination, Err: fmt.Errorf("connection to the source lost: %w", in.conn.Err())})
	case err != nil:
		in.fail(classify(Perform, Destination, fmt.Errorf("stream %s: %w", info.Name, err)))
	}
	in.mu.Lock()
	in.ended++
	if in.ended == len(in.Streams) {
		close(in.allEnded)
	}
	in.mu.Unlock()
}

// outcome hands the source's CONFIRM or ABORT to run. Only an outcome
// in its place settles the migration (later failures are then no
// failures): a CONFIRM of success before this host's Finish succeeded is
// a failure, and an ABORT always carries one.
func (in *Incoming) outcome(e *Error, abort bool) *Error {
	if abort && e == nil {
		e = &Error{Phase: in.Phase(), Side: Source, Err: errors.New("the source aborted the migration")}
	}
	if !abort && e == nil && in.Phase() != Confirm {
		return in.fail(&Error{Phase: in.Phase(), Side: Destination, Err: errors.New("the source confirmed before its Finish")})
	}
	// The failure is kept before run can see the outcome (run then ends
	// the migration and reports its failure: recorded after the send, a
	// source's failed Confirm was once reported as success), and the ctx
	// ends after the send, so that run finds the outcome once its ctx has
	// ended.
	in.mu.Lock()
	in.settled = true
	var streams []*stream.Stream
	first := false
	if e != nil {
		e, streams, first = in.recordLocked(e, true)
	}
	in.mu.Unlock()
	select {
	case in.outcomes <- outcome{err: e, abort: abort}:
	default:
	}
	if first {
		in.stop(e, streams) // the streams stop at once
	}
	return nil
}
