package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// hostileIncoming is what a source announces in Prepare: a QEMU Begin
// cookie of ram bytes, one stream (no multifd).
func hostileIncoming(id string, ram int64) *migrate.Incoming {
	return &migrate.Incoming{
		ID:      id,
		Cookie:  fmt.Appendf(nil, `{"qemu":"7.2.0","ram":%d,"channels":0}`, ram),
		Streams: []migrate.StreamInfo{{Name: "main"}},
	}
}

// The -listen -qemu destination starts its QEMU from the source's word.
// Before: a source announcing a guest larger than the host got a QEMU of
// that -m (its memory file in /tmp, filled as the pages arrive); and a
// second Prepare while the first migration ran replaced the first QEMU,
// which then ran on after the destination stopped, never killed.
func TestQEMUDestinationRefusesWhatTheHostCannotHold(t *testing.T) {
	if hostRAM() == 0 {
		t.Skip("no host memory size on this OS")
	}
	d := &qemuDestination{out: io.Discard}
	ctx := context.Background()
	_, _, err := d.Prepare(ctx, hostileIncoming("huge", 1<<50))
	require.ErrorContains(t, err, "more than this host's")
	require.Nil(t, d.proc, "a QEMU started for a guest larger than the host")
	require.Empty(t, d.dir)

	requireQEMU(t)
	_, _, err = d.Prepare(ctx, hostileIncoming("first", 64<<20))
	require.NoError(t, err)
	first := d.proc
	require.NotNil(t, first)
	dir := d.dir
	_, _, err = d.Prepare(ctx, hostileIncoming("second", 64<<20))
	require.ErrorContains(t, err, "already taking a guest (migration second refused)")
	require.Same(t, first, d.proc, "the second Prepare replaced the first's QEMU")

	_, err = d.Finish(ctx, hostileIncoming("first", 64<<20), errors.New("the source went away"))
	require.NoError(t, err)
	d.stop()
	<-first.Exited()
	require.ErrorIs(t, syscall.Kill(first.PID(), 0), syscall.ESRCH, "QEMU %d still runs", first.PID())
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "the destination's files stay")
}

// A source that prepares a real QEMU destination and hangs up, or goes
// silent: the destination's QEMU is killed by its PID, nothing is left
// incoming, and the files stay only until the destination stops.
func TestQEMUDestinationSourceGone(t *testing.T) {
	requireQEMU(t)
	for _, hangUp := range []bool{true, false} {
		t.Run(map[bool]string{true: "hangs up", false: "goes silent"}[hangUp], func(t *testing.T) {
			d := &qemuDestination{out: io.Discard}
			defer d.stop()
			ended := make(chan error, 1)
			idle := time.Second
			if hangUp {
				idle = -1 // the lost connection alone ends it
			}
			rcv := migrate.NewReceiver(d, &migrate.ReceiverOptions{
				IdleTimeout: idle,
				OnDone:      func(in *migrate.Incoming, err error) { ended <- err },
			})
			defer rcv.Close()
			mux := rpc.NewMux()
			rcv.Register(mux)
			cc, sc := net.Pipe()
			srv := rpc.Server(sc, &rpc.Options{Handlers: mux})
			defer srv.Close()
			ctx := context.Background()
			src, err := rpc.Client(ctx, cc, nil)
			require.NoError(t, err)
			defer src.Close()

			type stream struct {
				Name   string
				Size   int64
				Sparse bool
			}
			args := struct {
				ID      string
				Cookie  []byte
				Streams []stream
			}{"guest-01", hostileIncoming("", 64<<20).Cookie, []stream{{Name: "main"}}}
			var ret struct{ Cookie []byte }
			require.NoError(t, src.CallXDR(ctx, migrate.ProcPrepare, args, &ret))
			d.mu.Lock()
			proc := d.proc
			d.mu.Unlock()
			require.NotNil(t, proc)
			if hangUp {
				require.NoError(t, src.Close())
			}
			var me *migrate.Error
			select {
			case err := <-ended:
				require.ErrorAs(t, err, &me)
				require.Equal(t, migrate.Destination, me.Side, "%v", err)
				require.Contains(t, err.Error(), map[bool]string{true: "connection to the source lost", false: "the source sent nothing for 1s"}[hangUp])
			case <-time.After(60 * time.Second):
				t.Fatal("the destination never ended the migration")
			}
			<-proc.Exited()
			require.ErrorIs(t, syscall.Kill(proc.PID(), 0), syscall.ESRCH, "QEMU %d still runs", proc.PID())
			require.Nil(t, rcv.Incoming("guest-01"))
		})
	}
}
