package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// withContext runs fn, a blocking exchange on c, under ctx: if ctx is done
// before fn returns, c is closed to unblock fn and the context's error is
// returned. This is how crypto/tls bounds HandshakeContext, and unlike
// deadlines it leaves the caller's deadlines on c untouched. No goroutine
// outlives the call.
func withContext(ctx context.Context, c io.Closer, fn func() error) error {
	if ctx.Done() == nil {
		return fn()
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		close(interrupted)
	})
	err := fn()
	if !stop() {
		<-interrupted
		return ctx.Err()
	}
	return err
}

// ctxError makes sure err matches ctx's error when ctx is done, since some
// layers report an expired context as a closed connection or an I/O
// timeout.
func ctxError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && err != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
