package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/stream"
)

// These tests play a hostile or broken source: raw calls of the migration
// program over real TLS, in orders and sizes no Outgoing sends.

// The wire payloads, as the package documentation gives them.
type (
	rawStream struct {
		Name   string
		Size   int64
		Sparse bool
	}
	rawPrepare struct {
		ID      string
		Cookie  []byte
		Streams []rawStream
	}
	rawTunnel struct {
		ID    string
		Index uint32
	}
)

func rawPrepareCall(ctx context.Context, c *rpc.Conn, id string, cookie []byte, streams int) error {
	a := rawPrepare{ID: id, Cookie: cookie}
	for i := range streams {
		a.Streams = append(a.Streams, rawStream{Name: fmt.Sprint("s", i), Size: 1 << 40})
	}
	var ret struct{ Cookie []byte }
	return c.CallXDR(ctx, migrate.ProcPrepare, a, &ret)
}

// requireWireFailure asserts that err, from a raw call or stream, carries
// a migration failure of phase on side whose reason mentions why.
func requireWireFailure(t *testing.T, err error, phase migrate.Phase, side migrate.Side, why string) {
	t.Helper()
	var fe *frame.Error
	require.True(t, errors.As(err, &fe), "not a *frame.Error: %v", err)
	require.EqualValues(t, frame.CodeOperationFailed, fe.Code, "%v", err)
	require.NotNil(t, fe.Str1, "phase of %v", err)
	require.NotNil(t, fe.Str2, "side of %v", err)
	require.NotNil(t, fe.Str3, "reason of %v", err)
	require.Equal(t, phase.String(), *fe.Str1, "phase of %v", err)
	require.Equal(t, side.String(), *fe.Str2, "side of %v", err)
	require.Contains(t, *fe.Str3, why)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// A source that prepares migration after migration (each with a 1 MiB
// cookie and 64 streams) and never sends a byte: before MaxIncoming the
// destination accepted all of them, holding every cookie and every
// driver's Prepare (a QEMU each, in the real driver) for as long as the
// connection lived.
func TestHostilePreparesAreBounded(t *testing.T) {
	drv := &dstDriver{}
	rec := newDoneRecorder()
	l := newLink(t, drv, &migrate.ReceiverOptions{OnDone: rec.onDone, MaxIncoming: 4}, false)
	ctx := context.Background()
	cookie := make([]byte, 1<<20)
	before := heapInUse()
	var refused error
	accepted := 0
	for i := range 40 {
		cookie[0] = byte(i) // a fresh cookie each time
		err := rawPrepareCall(ctx, l.src, fmt.Sprint("m", i), cookie, 64)
		if err != nil {
			refused = err
			continue
		}
		accepted++
	}
	held := int64(heapInUse()) - int64(before)
	require.Equal(t, 4, accepted, "Prepares accepted with MaxIncoming 4")
	requireWireFailure(t, refused, migrate.Prepare, migrate.Destination, "already incoming (ReceiverOptions.MaxIncoming)")
	require.Less(t, held, int64(32<<20), "heap held after 40 Prepares of 1 MiB cookies")

	// The ones accepted end (the driver cleans up) once the source goes.
	require.NoError(t, l.src.Close())
	for i := range 4 {
		requireMigrateError(t, rec.wait(t, fmt.Sprint("m", i)), migrate.Perform, migrate.Destination, "connection to the source lost")
	}
	for _, f := range drv.finishCalls() {
		require.Error(t, f, "the driver's Finish after a lost source")
	}
}

type rawFinish struct {
	ID     string
	Sent   []int64
	Cookie []byte
}

// A source that goes silent on a live connection: after Prepare, after a
// few bytes, after a FINISH that left a stream open, after FINISH without
// its CONFIRM. Before IdleTimeout the destination waited for ever (OnDone
// never came; in the FINISH cases the FINISH call never returned).
func TestSilentSourceIsReaped(t *testing.T) {
	data := []byte("a few bytes, then nothing")
	cases := []struct {
		name    string
		streams int
		// script plays the source after its Prepare; it returns the
		// stream it opened, if any, and FINISH's result.
		script   func(t *testing.T, c *rpc.Conn) (*stream.Stream, error)
		phase    migrate.Phase
		finishes []bool // the driver's Finish calls: with a failure?
		// idle is IdleTimeout: long enough, where the script acts, that a
		// loaded machine does not reap the migration between its calls.
		idle time.Duration
	}{
		{"after prepare", 2, func(t *testing.T, c *rpc.Conn) (*stream.Stream, error) { return nil, nil },
			migrate.Perform, []bool{true}, 300 * time.Millisecond},
		{"mid stream", 2, func(t *testing.T, c *rpc.Conn) (*stream.Stream, error) {
			return openAndWrite(t, c, data), nil
		}, migrate.Perform, []bool{true}, 2 * time.Second},
		{"finish with a stream left open", 1, func(t *testing.T, c *rpc.Conn) (*stream.Stream, error) {
			st := openAndWrite(t, c, data)
			return st, c.CallXDR(context.Background(), migrate.ProcFinish, rawFinish{ID: "quiet", Sent: []int64{int64(len(data))}}, nil)
		}, migrate.Perform, []bool{true}, 2 * time.Second},
		{"no confirm", 1, func(t *testing.T, c *rpc.Conn) (*stream.Stream, error) {
			st := openAndWrite(t, c, data)
			require.NoError(t, st.Close())
			var ret struct{ Cookie []byte }
			require.NoError(t, c.CallXDR(context.Background(), migrate.ProcFinish, rawFinish{ID: "quiet", Sent: []int64{int64(len(data))}}, &ret))
			return nil, nil
		}, migrate.Confirm, []bool{false}, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			drv := &dstDriver{}
			rec := newDoneRecorder()
			l := newLink(t, drv, &migrate.ReceiverOptions{OnDone: rec.onDone, IdleTimeout: tc.idle}, false)
			require.NoError(t, rawPrepareCall(context.Background(), l.src, "quiet", []byte("c"), tc.streams))
			st, finishErr := tc.script(t, l.src)
			err := rec.wait(t, "quiet")
			requireMigrateError(t, err, tc.phase, migrate.Destination, fmt.Sprintf("the source sent nothing for %s", tc.idle))
			if tc.name == "finish with a stream left open" {
				requireWireFailure(t, finishErr, tc.phase, migrate.Destination, "sent nothing")
			}
			calls := drv.finishCalls()
			require.Len(t, calls, len(tc.finishes))
			for i, failed := range tc.finishes {
				if failed {
					require.ErrorIs(t, calls[i], err)
				} else {
					require.NoError(t, calls[i])
				}
			}
			if st != nil { // the source hears it on its stream
				_, werr := st.Write(make([]byte, 1<<20))
				for werr == nil {
					_, werr = st.Write(make([]byte, 1<<20))
				}
				requireWireFailure(t, werr, migrate.Perform, migrate.Destination, "sent nothing")
				_ = st.Close()
			}
			require.Nil(t, l.rcv.Incoming("quiet"))
		})
	}
}

func openAndWrite(t *testing.T, c *rpc.Conn, data []byte) *stream.Stream {
	t.Helper()
	st, err := c.OpenStreamXDR(context.Background(), migrate.ProcTunnel, rawTunnel{ID: "quiet", Index: 0}, stream.Upload, nil, nil)
	require.NoError(t, err)
	_, err = st.Write(data)
	require.NoError(t, err)
	return st
}

// rawPeer speaks libvirt's framing by hand to a destination served over
// net.Pipe, so that a test chooses the serials and the order of calls.
type rawPeer struct {
	c  net.Conn
	fr *frame.Reader
}

func newRawPeer(t *testing.T, rcv *migrate.Receiver) *rawPeer {
	t.Helper()
	cc, sc := net.Pipe()
	mux := rpc.NewMux()
	rcv.Register(mux)
	dst := rpc.Server(sc, &rpc.Options{Handlers: mux, Negotiation: rpc.CompatOnly})
	t.Cleanup(func() {
		_ = cc.Close()
		_ = dst.Close()
		<-dst.Done()
	})
	return &rawPeer{c: cc, fr: frame.NewReader(cc, nil)}
}

// call sends one call with serial and returns its reply's error, if any.
func (p *rawPeer) call(t *testing.T, proc rpc.Procedure, serial uint32, args any) error {
	t.Helper()
	payload, err := xdr.Marshal(args)
	require.NoError(t, err)
	h := frame.Header{Prog: proc.Prog, Vers: proc.Vers, Proc: proc.Proc, Type: frame.TypeCall, Serial: serial}
	_, err = p.c.Write(frame.Append(nil, h, payload))
	require.NoError(t, err)
	rh, _, err := p.fr.Next()
	require.NoError(t, err)
	require.Equal(t, serial, rh.Serial)
	body, err := p.fr.Payload()
	require.NoError(t, err)
	if rh.Status == frame.StatusError {
		fe, err := frame.DecodeError(body)
		require.NoError(t, err)
		return fe
	}
	return nil
}

type rawOutcome struct {
	ID     string
	Failed *struct {
		Phase  int32
		Side   int32
		Reason string
	}
}

// A source cancels while its PREPARE is on the way: its ABORT (a later
// serial) is served first, since handlers run concurrently. Before, the
// ABORT found no migration and was taken for one that failed in Begin; the
// PREPARE served next started the migration anyway (the driver's Prepare:
// a QEMU, in the real driver) for a source that had gone, and it stayed
// incoming until the connection closed. Now that PREPARE is refused. A
// later PREPARE of the same ID (a retry after a Begin failure) is served.
func TestAbortOvertakesPrepare(t *testing.T) {
	drv := &dstDriver{}
	rec := newDoneRecorder()
	rcv := migrate.NewReceiver(drv, &migrate.ReceiverOptions{OnDone: rec.onDone, IdleTimeout: -1})
	t.Cleanup(func() { _ = rcv.Close() })
	p := newRawPeer(t, rcv)

	abort := rawOutcome{ID: "raced"}
	abort.Failed = &struct {
		Phase  int32
		Side   int32
		Reason string
	}{int32(migrate.Prepare), int32(migrate.Source), "cancelled: context canceled"}
	require.NoError(t, p.call(t, migrate.ProcAbort, 2, abort))
	requireMigrateError(t, rec.wait(t, "raced"), migrate.Prepare, migrate.Source, "cancelled: context canceled")

	prep := rawPrepare{ID: "raced", Cookie: []byte("c"), Streams: []rawStream{{Name: "main"}}}
	err := p.call(t, migrate.ProcPrepare, 1, prep)
	requireWireFailure(t, err, migrate.Prepare, migrate.Destination, "the source aborted migration raced before its Prepare arrived")
	require.Nil(t, rcv.Incoming("raced"), "a migration incoming for a source that aborted it")
	drv.mu.Lock()
	require.Nil(t, drv.incoming, "the driver's Prepare ran for an aborted migration")
	drv.mu.Unlock()

	// The same ID again, sent after the ABORT: a new migration.
	require.NoError(t, p.call(t, migrate.ProcPrepare, 3, prep))
	require.NotNil(t, rcv.Incoming("raced"))
}

// A source that sends its outcome out of order: CONFIRM of success before
// any FINISH, or ABORT without a failure, then hangs up. Before, either
// marked the migration settled, so the lost connection (and the idle
// watch, and Receiver.Close) no longer failed it: the destination held
// it, and its driver's Prepare, for ever, and Close never returned.
func TestOutcomeOutOfOrder(t *testing.T) {
	for _, abort := range []bool{false, true} {
		name := map[bool]string{false: "confirm before finish", true: "abort without failure"}[abort]
		t.Run(name, func(t *testing.T) {
			drv := &dstDriver{}
			rec := newDoneRecorder()
			l := newLink(t, drv, &migrate.ReceiverOptions{OnDone: rec.onDone, IdleTimeout: -1}, false)
			ctx := context.Background()
			require.NoError(t, rawPrepareCall(ctx, l.src, "early", []byte("c"), 1))
			proc := migrate.ProcConfirm
			if abort {
				proc = migrate.ProcAbort
			}
			callErr := l.src.CallXDR(ctx, proc, rawOutcome{ID: "early"}, nil)
			require.NoError(t, l.src.Close())
			err := rec.wait(t, "early")
			if abort {
				require.NoError(t, callErr)
				requireMigrateError(t, err, migrate.Perform, migrate.Source, "the source aborted the migration")
			} else {
				requireWireFailure(t, callErr, migrate.Perform, migrate.Destination, "the source confirmed before its Finish")
				requireMigrateError(t, err, migrate.Perform, migrate.Destination, "the source confirmed before its Finish")
			}
			calls := drv.finishCalls()
			require.Len(t, calls, 1)
			require.ErrorIs(t, calls[0], err)
			require.NoError(t, l.rcv.Close())
		})
	}
}

// Stream sizes are the source's word. Before, a negative size was taken
// (and counted as known by nothing), sizes whose sum overflows int64 made
// the total negative, and a remaining time beyond int64 nanoseconds was
// whatever the float conversion gave.
func TestHostileSizes(t *testing.T) {
	l := newLink(t, &dstDriver{}, nil, false)
	ctx := context.Background()
	for _, sizes := range [][]int64{{-1}, {1 << 62, 1 << 62}, {math.MaxInt64}} {
		a := rawPrepare{ID: fmt.Sprint("sizes", sizes[0]), Cookie: []byte("c")}
		for i, s := range sizes {
			a.Streams = append(a.Streams, rawStream{Name: fmt.Sprint("s", i), Size: s})
		}
		err := l.src.CallXDR(ctx, migrate.ProcPrepare, a, nil)
		requireWireFailure(t, err, migrate.Prepare, migrate.Destination, "bytes (0 is unknown; all streams together at most")
		require.Nil(t, l.rcv.Incoming(a.ID))
	}
	long := migrate.Remaining(migrate.StreamProgress{Bytes: 1, Size: 1 << 60, Rate: 1e-3})
	require.Equal(t, 100*365*24*time.Hour, long, "a remaining time past int64 nanoseconds")
	require.Equal(t, 2*time.Second, migrate.Remaining(migrate.StreamProgress{Bytes: 10, Size: 30, Rate: 10}))
}

// Another peer of the destination that knows a migration's ID (the main
// job's is always guest-01). Before, every call found a migration by its
// ID alone: a second connection could open the migration's streams and
// write into the guest, or abort or finish it.
func TestOtherConnectionCannotDriveAMigration(t *testing.T) {
	drv := &dstDriver{}
	rec := newDoneRecorder()
	rcv := migrate.NewReceiver(drv, &migrate.ReceiverOptions{OnDone: rec.onDone, IdleTimeout: -1})
	t.Cleanup(func() { _ = rcv.Close() })
	owner, other := newRawPeer(t, rcv), newRawPeer(t, rcv)

	prep := rawPrepare{ID: "vm", Cookie: []byte("c"), Streams: []rawStream{{Name: "main"}}}
	require.NoError(t, owner.call(t, migrate.ProcPrepare, 1, prep))
	in := rcv.Incoming("vm")
	require.NotNil(t, in)

	abort := rawOutcome{ID: "vm"}
	abort.Failed = &struct {
		Phase  int32
		Side   int32
		Reason string
	}{int32(migrate.Perform), int32(migrate.Source), "hijacked"}
	for i, c := range []struct {
		proc  rpc.Procedure
		args  any
		phase migrate.Phase
	}{
		{migrate.ProcTunnel, rawTunnel{ID: "vm", Index: 0}, migrate.Prepare},
		{migrate.ProcFinish, rawFinish{ID: "vm", Sent: []int64{0}}, migrate.Finish},
		{migrate.ProcAbort, abort, migrate.Confirm},
		{migrate.ProcConfirm, rawOutcome{ID: "vm"}, migrate.Confirm},
		{migrate.ProcWatch, struct{ ID string }{"vm"}, migrate.Perform},
	} {
		err := other.call(t, c.proc, uint32(10+i), c.args)
		requireWireFailure(t, err, c.phase, migrate.Destination, "no migration vm on this connection")
	}
	require.Same(t, in, rcv.Incoming("vm"), "the owner's migration was ended by another connection")
	require.NoError(t, in.Err())

	// The owner still drives it.
	require.NoError(t, owner.call(t, migrate.ProcTunnel, 2, rawTunnel{ID: "vm", Index: 0}))
}
