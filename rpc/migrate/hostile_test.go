package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
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

// A source that prepares and then goes silent on a live connection:
// before IdleTimeout the destination waited for its FINISH for ever.
func TestSilentSourceIsReaped(t *testing.T) {
	for _, openStream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream opened ", openStream), func(t *testing.T) {
			drv := &dstDriver{}
			rec := newDoneRecorder()
			l := newLink(t, drv, &migrate.ReceiverOptions{OnDone: rec.onDone, IdleTimeout: 300 * time.Millisecond}, false)
			ctx := context.Background()
			require.NoError(t, rawPrepareCall(ctx, l.src, "quiet", []byte("c"), 2))
			var st *stream.Stream
			if openStream {
				var err error
				st, err = l.src.OpenStreamXDR(ctx, migrate.ProcTunnel, rawTunnel{ID: "quiet", Index: 0}, stream.Upload, nil, nil)
				require.NoError(t, err)
				_, err = st.Write([]byte("a few bytes, then nothing"))
				require.NoError(t, err)
			}
			err := rec.wait(t, "quiet")
			requireMigrateError(t, err, migrate.Perform, migrate.Destination, "the source sent nothing for 300ms")
			require.Len(t, drv.finishCalls(), 1)
			require.ErrorIs(t, drv.finishCalls()[0], err)
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
