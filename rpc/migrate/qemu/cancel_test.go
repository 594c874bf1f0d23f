package qemu_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// A migration cancelled mid-transfer, at a random offset (seeded: the seed
// is logged, VIRTRPC_TEST_SEED replays it), from the source or from the
// destination: both hosts report the phase (Perform), the side and the
// reason; the source guest keeps running; the destination QEMU is killed.
func TestQEMUCancelledMidTransfer(t *testing.T) {
	requireQEMU(t)
	seed := uint64(envInt("VIRTRPC_TEST_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("seed %d (VIRTRPC_TEST_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for _, side := range []migrate.Side{migrate.Source, migrate.Destination} {
		// Anywhere from the first MiB to 64 MiB before the end of the
		// RAM: at 80 MB/s that leaves 0.8 s for the cancel to land
		// before the transfer is over, on a loaded machine too.
		at := 1<<20 + rng.Int64N((guestMiB-65)<<20)
		t.Run("from the "+side.String(), func(t *testing.T) {
			t.Logf("cancelling once %d bytes have arrived", at)
			dir := shortTempDir(t)
			srcMem, dstMem := filepath.Join(dir, "src.ram"), filepath.Join(dir, "dst.ram")
			prefill(t, srcMem)
			src := startGuest(t, filepath.Join(dir, "src"), srcMem, false)
			dst := startGuest(t, filepath.Join(dir, "dst"), dstMem, true)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			reason := errors.New("operator cancelled on the " + side.String())

			var rcv *migrate.Receiver
			var once sync.Once
			dstDone := make(chan error, 1)
			rcv = migrate.NewReceiver(
				qemu.NewDestination(dst.QMP, qemu.DestinationOptions{Dir: filepath.Join(dir, "dst"), Kill: dst.Kill}),
				&migrate.ReceiverOptions{
					ProgressInterval: 50 * time.Millisecond,
					OnProgress: func(in *migrate.Incoming, p migrate.Progress) {
						if p.Total.Bytes >= at {
							once.Do(func() {
								if side == migrate.Destination {
									go rcv.Cancel(in.ID, reason)
								} else {
									cancel(reason)
								}
							})
						}
					},
					OnDone: func(in *migrate.Incoming, err error) { dstDone <- err },
				})
			defer rcv.Close()
			mux := rpc.NewMux()
			rcv.Register(mux)
			conn := tlsLink(t, mux)

			// 80 MB/s: the transfer takes seconds, and the progress
			// reports (every 50 ms, 4 MB apart) land well before its end.
			out := migrate.NewOutgoing(conn, qemu.NewSource(src.QMP, qemu.SourceOptions{Dir: filepath.Join(dir, "src")}),
				&migrate.OutgoingOptions{Limit: 80e6})
			err := out.Run(ctx)
			requireFailure(t, err, side, reason.Error())
			assert.NotContains(t, err.Error(), "channel closed", "a consequence reported in place of the reason")
			select {
			case derr := <-dstDone:
				requireFailure(t, derr, side, reason.Error())
			case <-time.After(30 * time.Second):
				t.Fatal("the destination never reported the end of the migration")
			}

			select {
			case <-dst.Exited():
			case <-time.After(30 * time.Second):
				t.Fatal("the destination QEMU is still running")
			}
			qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer qcancel()
			st, err := src.QMP.QueryStatus(qctx)
			require.NoError(t, err)
			assert.Equal(t, "running", st, "the source guest")
			sent := out.Progress().Total.Bytes
			assert.GreaterOrEqual(t, sent, at, "cancelled before the offset")
			assert.Less(t, sent, int64(guestMiB<<20), "the cancel came after the transfer")
		})
	}
}

func requireFailure(t *testing.T, err error, side migrate.Side, why string) {
	t.Helper()
	var me *migrate.Error
	require.True(t, errors.As(err, &me), "not a *migrate.Error: %v", err)
	assert.Equal(t, migrate.Perform, me.Phase, "%v", err)
	assert.Equal(t, side, me.Side, "%v", err)
	assert.Contains(t, err.Error(), why)
}
