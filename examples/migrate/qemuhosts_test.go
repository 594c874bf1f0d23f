package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

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
