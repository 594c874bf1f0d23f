package migrate_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// emptyReader returns (0, nil) for ever, as a broken io.Reader may.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// runWithin runs o and fails the test if Run does not return (a hang is
// the failure; the bound is no timing assertion).
func runWithin(t *testing.T, ctx context.Context, o *migrate.Outgoing) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Outgoing.Run never returned")
		return nil
	}
}

// A source reader that returns no data and no error for ever. Before, the
// pump spun on it at 100% of a core and never looked at its stream or its
// ctx: Run never returned, and the destination waited for ever.
func TestEmptyReaderFailsPerform(t *testing.T) {
	dst := &dstDriver{}
	done := newDoneRecorder()
	l := newLink(t, dst, &migrate.ReceiverOptions{OnDone: done.onDone}, false)
	src := &srcDriver{
		plan: migrate.Plan{Streams: []migrate.StreamInfo{{Name: "memory"}, {Name: "disk"}}},
		perform: func(context.Context, []byte) ([]io.Reader, error) {
			return []io.Reader{emptyReader{}, io.LimitReader(zeros{}, 1<<20)}, nil
		},
	}
	o := migrate.NewOutgoing(l.src, src, nil)
	err := runWithin(t, context.Background(), o)
	requireMigrateError(t, err, migrate.Perform, migrate.Source, "stream memory: the reader returned no data and no error 100 times")
	require.ErrorIs(t, err, io.ErrNoProgress)
	dstErr := done.wait(t, o.ID())
	requireMigrateError(t, dstErr, migrate.Perform, migrate.Source, "the reader returned no data")
	require.Len(t, dst.finishCalls(), 1)
	require.Error(t, dst.finishCalls()[0], "the destination's cleanup")
	require.Len(t, src.confirmed, 1)
	require.Error(t, src.confirmed[0], "the source's Confirm")
}
