package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// Mistakes by the library's user get clear errors, and the connection
// carries on.
func TestUserErrorsAreClear(t *testing.T) {
	misuse := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 40}
	got := make(chan []error, 1)
	mux := streamMux(t)
	mux.Handle(misuse, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		var errs []error
		st, err := req.Stream(stream.Download, nil)
		errs = append(errs, err)
		_, err = req.Stream(stream.Download, nil)
		errs = append(errs, err) // a second stream on one call
		errs = append(errs, st.WriteHole(ctx, 10))
		errs = append(errs, req.Reply(nil))
		errs = append(errs, req.Reply(nil)) // a second reply
		_, err = req.Stream(stream.Download, nil)
		errs = append(errs, err) // a stream after the reply
		got <- errs
		return nil, st.Close()
	})
	c, _ := pair(t, &rpc.Options{MaxMessage: 1 << 20}, &rpc.Options{Handlers: mux})

	_, err := c.Call(context.Background(), echoProc, make([]byte, 1<<20))
	require.ErrorIs(t, err, frame.ErrFrameTooLarge, "arguments over the message limit")
	require.ErrorIs(t, c.Send(context.Background(), eventProc, make([]byte, 2<<20)), frame.ErrFrameTooLarge)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Call(ctx, echoProc, nil)
	require.ErrorIs(t, err, context.Canceled)

	st, _, err := c.OpenStream(context.Background(), misuse, nil, stream.Download, nil)
	require.NoError(t, err)
	errs := <-got
	require.NoError(t, errs[0])
	assert.ErrorContains(t, errs[1], "already has a stream")
	assert.ErrorIs(t, errs[2], stream.ErrNotSparse)
	assert.NoError(t, errs[3])
	assert.ErrorContains(t, errs[4], "reply already sent")
	assert.ErrorContains(t, errs[5], "after the reply")
	_, err = io.ReadAll(st) // a download is closed after its end, else Close reports an abort
	require.NoError(t, err)
	require.NoError(t, st.Close())

	_, err = st.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed, "writing a closed stream")

	// The connection is still fine.
	out, err := c.Call(context.Background(), echoProc, []byte("ok"))
	require.NoError(t, err)
	assert.Equal(t, "ok", string(out))

	require.NoError(t, c.Close())
	_, _, err = c.OpenStream(context.Background(), misuse, nil, stream.Download, nil)
	var ce *rpc.ClosedError
	require.ErrorAs(t, err, &ce)
}

// A handler's error too long for one message reaches the caller as an
// error saying so, and the connection carries on (the reply was once sent
// over the limit, and the peer closed the connection).
func TestHugeHandlerErrorStillAnswers(t *testing.T) {
	huge := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 41}
	mux := echoMux()
	mux.Handle(huge, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return nil, errors.New(strings.Repeat("x", 2<<20))
	})
	opts := &rpc.Options{Handlers: mux, MaxMessage: 1 << 20}
	c, _ := pair(t, &rpc.Options{MaxMessage: 1 << 20}, opts)
	_, err := c.Call(context.Background(), huge, nil)
	var re *rpc.Error
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Text(), "over the message limit")
	got, err := c.Call(context.Background(), echoProc, []byte("on"))
	require.NoError(t, err)
	assert.Equal(t, "on", string(got))
}
