package migrate_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// env is one migration between a scripted source and destination.
type env struct {
	t         *testing.T
	src       *srcDriver
	dst       *dstDriver
	rcv       *migrate.Receiver
	id        string
	cancelSrc context.CancelCauseFunc

	mu          sync.Mutex
	cancelledAt time.Time // when the test cancelled, on either side
}

// mark records when the test cancels.
func (e *env) mark() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancelledAt.IsZero() {
		e.cancelledAt = time.Now()
	}
}

// failingWriter accepts n bytes, then fails with err.
type failingWriter struct {
	n   int
	err error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

// notifyWriter discards, and closes ch at the first write.
type notifyWriter struct{ ch chan struct{} }

func (w *notifyWriter) Write(p []byte) (int, error) {
	select {
	case <-w.ch:
	default:
		close(w.ch)
	}
	return len(p), nil
}

// A failure in every phase, on either side, reaches the other side with its
// phase, side and reason; the destination cleans up exactly when it must
// (Finish with the failure), and the source's Confirm learns the failure.
func TestFailureInEveryPhaseReachesTheOtherSide(t *testing.T) {
	type check struct {
		cleanup       bool // the destination's Finish is called with the failure
		finishedFirst bool // a Finish without failure came first
		noConfirm     bool // the source's Confirm is not called (Begin failed)
		confirmedOK   bool // the source's Confirm saw success (it failed itself)
		within        time.Duration
	}
	cases := []struct {
		name  string
		phase migrate.Phase
		side  migrate.Side
		why   string
		setup func(e *env)
		check check
	}{
		{"begin on the source", migrate.Begin, migrate.Source, "no such guest",
			func(e *env) { e.src.beginErr = errors.New("no such guest") },
			check{noConfirm: true}},
		{"prepare on the destination", migrate.Prepare, migrate.Destination, "no room for the guest",
			func(e *env) {
				e.dst.prepare = func(context.Context) error { return errors.New("no room for the guest") }
			},
			check{}},
		{"prepare cancelled on the source", migrate.Prepare, migrate.Source, "operator gave up",
			func(e *env) {
				e.dst.prepare = func(ctx context.Context) error {
					e.cancelSource(errors.New("operator gave up"))
					<-ctx.Done()
					return context.Cause(ctx)
				}
			},
			check{within: time.Second}},
		{"prepare cancelled on the destination", migrate.Prepare, migrate.Destination, "operator gave up here",
			func(e *env) {
				e.dst.prepare = func(ctx context.Context) error {
					go e.cancelDst(errors.New("operator gave up here"))
					<-ctx.Done()
					return context.Cause(ctx)
				}
			},
			check{within: time.Second}},
		{"perform on the source", migrate.Perform, migrate.Source, "read error on the source disk",
			func(e *env) {
				e.src.perform = func(context.Context, []byte) ([]io.Reader, error) {
					return []io.Reader{
						bytesReader(e.src.data[0]),
						io.MultiReader(bytesReader(e.src.data[1][:1<<19]), errReader{errors.New("read error on the source disk")}),
					}, nil
				}
			},
			check{cleanup: true}},
		{"perform on the destination", migrate.Perform, migrate.Destination, "no space left on the destination",
			func(e *env) {
				e.dst.sinks = func(in *migrate.Incoming) []io.Writer {
					return []io.Writer{io.Discard, &failingWriter{n: 1 << 19, err: errors.New("no space left on the destination")}}
				}
			},
			check{cleanup: true}},
		{"perform cancelled on the destination while the source's reader blocks", migrate.Perform, migrate.Destination, "operator cancelled",
			func(e *env) {
				arrived := make(chan struct{})
				br := newBlockingReader(e.src.data[0][:1<<20])
				e.src.perform = func(context.Context, []byte) ([]io.Reader, error) {
					return []io.Reader{br, bytesReader(e.src.data[1])}, nil
				}
				e.dst.sinks = func(in *migrate.Incoming) []io.Writer {
					go func() {
						<-arrived
						e.cancelDst(errors.New("operator cancelled"))
					}()
					return []io.Writer{&notifyWriter{ch: arrived}, io.Discard}
				}
			},
			check{cleanup: true, within: time.Second}},
		{"perform cancelled on the source while its reader blocks", migrate.Perform, migrate.Source, "operator cancelled the source",
			func(e *env) {
				arrived := make(chan struct{})
				br := newBlockingReader(e.src.data[0][:1<<20])
				e.src.perform = func(context.Context, []byte) ([]io.Reader, error) {
					return []io.Reader{br, bytesReader(e.src.data[1])}, nil
				}
				e.dst.sinks = func(in *migrate.Incoming) []io.Writer {
					go func() {
						<-arrived
						e.cancelSource(errors.New("operator cancelled the source"))
					}()
					return []io.Writer{&notifyWriter{ch: arrived}, io.Discard}
				}
			},
			check{cleanup: true, within: time.Second}},
		{"finish on the destination", migrate.Finish, migrate.Destination, "guest would not start",
			func(e *env) {
				e.dst.finish = func(context.Context) error { return errors.New("guest would not start") }
			},
			check{finishedFirst: true}},
		{"finish cancelled on the source", migrate.Finish, migrate.Source, "operator gave up in finish",
			func(e *env) {
				e.dst.finish = func(ctx context.Context) error {
					e.cancelSource(errors.New("operator gave up in finish"))
					<-ctx.Done()
					return context.Cause(ctx)
				}
			},
			check{finishedFirst: true, within: time.Second}},
		{"finish cancelled on the destination", migrate.Finish, migrate.Destination, "operator gave up here in finish",
			func(e *env) {
				e.dst.finish = func(ctx context.Context) error {
					go e.cancelDst(errors.New("operator gave up here in finish"))
					<-ctx.Done()
					return context.Cause(ctx)
				}
			},
			check{finishedFirst: true, within: time.Second}},
		{"confirm on the source", migrate.Confirm, migrate.Source, "could not stop the source guest",
			func(e *env) { e.src.confirmErr = errors.New("could not stop the source guest") },
			check{finishedFirst: true, confirmedOK: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{t: t, id: "vm-" + t.Name()[len(t.Name())-8:]}
			e.src = &srcDriver{
				plan: migrate.Plan{Cookie: []byte("src-cookie"), Streams: []migrate.StreamInfo{
					{Name: "memory", Size: 4 << 20}, {Name: "disk", Size: 1 << 20}}},
				data: [][]byte{randBytes(4<<20, 1), randBytes(1<<20, 2)},
			}
			e.dst = &dstDriver{prepareCookie: []byte("dst-prepare"), finishCookie: []byte("dst-finish")}
			done := newDoneRecorder()
			l := newLink(t, e.dst, &migrate.ReceiverOptions{OnDone: done.onDone}, false)
			e.rcv = l.rcv
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			e.cancelSrc = cancel
			tc.setup(e)

			out := migrate.NewOutgoing(l.src, e.src, &migrate.OutgoingOptions{ID: e.id})
			srcErr := make(chan error, 1)
			go func() { srcErr <- out.Run(ctx) }()
			dstErr := done.wait(t, e.id)
			dstAt := time.Now()
			var err error
			select {
			case err = <-srcErr:
			case <-time.After(20 * time.Second):
				t.Fatal("the source's Run never returned")
			}
			srcAt := time.Now()
			if tc.check.within > 0 {
				e.mu.Lock()
				at := e.cancelledAt
				e.mu.Unlock()
				require.False(t, at.IsZero(), "the test never cancelled")
				otherAt := dstAt // the destination learns a cancel on the source
				if tc.side == migrate.Destination {
					otherAt = srcAt
				}
				assert.Less(t, otherAt.Sub(at), tc.check.within, "the other side learned the cancel after")
			}
			requireMigrateError(t, err, tc.phase, tc.side, tc.why)
			requireMigrateError(t, dstErr, tc.phase, tc.side, tc.why)

			finishes := e.dst.finishCalls()
			want := []bool{} // per Finish call: with a failure
			if tc.check.finishedFirst {
				want = append(want, false)
			}
			if tc.check.cleanup {
				want = append(want, true)
			}
			got := make([]bool, len(finishes))
			for i, f := range finishes {
				got[i] = f != nil
				if f != nil {
					requireMigrateError(t, f, tc.phase, tc.side, tc.why)
				}
			}
			assert.Equal(t, want, got, "the destination's Finish calls (true: with a failure)")

			e.src.mu.Lock()
			confirmed := e.src.confirmed
			e.src.mu.Unlock()
			switch {
			case tc.check.noConfirm:
				assert.Empty(t, confirmed)
			case tc.check.confirmedOK:
				assert.Equal(t, []error{nil}, confirmed)
			default:
				require.Len(t, confirmed, 1)
				requireMigrateError(t, confirmed[0], tc.phase, tc.side, tc.why)
			}
			assert.Nil(t, l.rcv.Incoming(e.id), "the destination still holds the migration")
		})
	}
}

func (e *env) cancelDst(reason error) {
	e.mark()
	e.rcv.Cancel(e.id, reason)
}

func (e *env) cancelSource(reason error) {
	e.mark()
	e.cancelSrc(reason)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// A connection lost mid-transfer (the peer process killed) fails the
// migration on both hosts in Perform, and the destination cleans up.
func TestConnectionLostMidTransfer(t *testing.T) {
	dst := &dstDriver{}
	done := newDoneRecorder()
	var closeOnce sync.Once
	var l *link
	l = newLink(t, dst, &migrate.ReceiverOptions{
		OnDone:           done.onDone,
		ProgressInterval: 20 * time.Millisecond,
		OnProgress: func(in *migrate.Incoming, p migrate.Progress) {
			if p.Total.Bytes > 1<<20 {
				closeOnce.Do(func() { go l.dst.Close() }) // as if the destination process died
			}
		},
	}, false)
	src := &srcDriver{
		plan: migrate.Plan{Streams: []migrate.StreamInfo{{Name: "memory"}}},
		perform: func(context.Context, []byte) ([]io.Reader, error) {
			return []io.Reader{io.LimitReader(zeros{}, 1<<30)}, nil
		},
	}
	out := migrate.NewOutgoing(l.src, src, &migrate.OutgoingOptions{Limit: 20e6})
	err := out.Run(context.Background())
	var me *migrate.Error
	require.True(t, errors.As(err, &me), "%v", err)
	assert.Equal(t, migrate.Perform, me.Phase, "%v", err)
	if me.Side == migrate.Source { // else the destination's reason got through first
		assert.Contains(t, err.Error(), "connection to the destination lost")
	}
	dstErr := done.wait(t, out.ID())
	requireMigrateError(t, dstErr, migrate.Perform, migrate.Destination, "connection to the source lost")
	finishes := dst.finishCalls()
	require.Len(t, finishes, 1)
	assert.Error(t, finishes[0], "the destination's cleanup")
	require.Len(t, src.confirmed, 1)
	assert.Error(t, src.confirmed[0], "the source's Confirm")
	t.Logf("source: %v\ndestination: %v", err, dstErr)
}
