package migrate_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// A plain context cancel on the source mid-Perform: the source's error
// is an *Error of Perform on the source that errors.Is context.Canceled;
// the destination's names the same phase and side with the reason as
// text (context.Canceled itself does not cross the wire).
func TestCancelErrorsOnBothSides(t *testing.T) {
	dst := &dstDriver{}
	done := newDoneRecorder()
	l := newLink(t, dst, &migrate.ReceiverOptions{OnDone: done.onDone}, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newBlockingReader(make([]byte, 1<<20))
	src := &srcDriver{
		plan: migrate.Plan{Streams: []migrate.StreamInfo{{Name: "memory"}}},
		perform: func(context.Context, []byte) ([]io.Reader, error) {
			go cancel() // while the reader blocks
			return []io.Reader{r}, nil
		},
	}
	o := migrate.NewOutgoing(l.src, src, nil)
	err := runWithin(t, ctx, o)
	me := requireMigrateError(t, err, migrate.Perform, migrate.Source, "cancelled: context canceled")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, "migration failed in perform on the source: cancelled: context canceled", me.Error())

	dstErr := done.wait(t, o.ID())
	requireMigrateError(t, dstErr, migrate.Perform, migrate.Source, "cancelled: context canceled")
	require.False(t, errors.Is(dstErr, context.Canceled), "a reason from the wire is text")
	require.Len(t, src.confirmed, 1)
	require.ErrorIs(t, src.confirmed[0], context.Canceled, "the source's Confirm learns the cancel")
}
