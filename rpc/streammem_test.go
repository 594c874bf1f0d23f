package rpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var holdUploadProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 96}

// A receiving stream's buffer (its window in native mode, CompatStreamBuffer
// in compat) is charged to the connection's memory budget while it is open:
// a peer opening upload after upload gets refused once they would add up past
// ConnectionMemory, instead of MaxStreams (1024) × the window, and the memory
// comes back as the streams end.
func TestReceivingStreamsDrawOnTheMemoryBudget(t *testing.T) {
	for _, mode := range []string{"native", "compat"} {
		t.Run(mode, func(t *testing.T) {
			release := make(chan struct{})
			mux := echoMux()
			mux.Handle(holdUploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
				st, err := req.Stream(stream.Upload, nil) // this side receives
				if err != nil {
					return nil, err
				}
				go func() {
					<-release
					_ = st.CloseWithError(nil)
				}()
				return nil, nil
			})
			sopts := &rpc.Options{Handlers: mux, ConnectionMemory: 8 << 20, StreamWindow: 1 << 20, CompatStreamBuffer: 1 << 20}
			copts := &rpc.Options{}
			if mode == "compat" {
				copts.Negotiation, sopts.Negotiation = rpc.CompatOnly, rpc.CompatOnly
			}
			c, srv := pair(t, copts, sopts)
			base := srv.Stats().Memory

			var open []*stream.Stream
			var refused error
			for range 64 {
				st, _, err := c.OpenStream(context.Background(), holdUploadProc, nil, stream.Upload, nil)
				if err != nil {
					refused = err
					break
				}
				open = append(open, st)
			}
			var re *rpc.Error
			require.ErrorAs(t, refused, &re, "64 uploads of a 1 MiB buffer each on an 8 MiB budget")
			assert.Contains(t, re.Text(), "memory budget")
			assert.GreaterOrEqual(t, len(open), 4, "streams within the budget open")
			assert.Less(t, len(open), 8)
			assert.LessOrEqual(t, srv.Stats().Memory, int64(8<<20))
			_, err := c.Call(context.Background(), echoProc, []byte("x"))
			require.NoError(t, err, "calls go on")

			close(release)
			for _, st := range open {
				_ = st.Close() // the receiver aborted: Close reports it
			}
			require.Eventually(t, func() bool { return srv.Stats().Memory == base && srv.Stats().StreamsOpen == 0 },
				10*time.Second, 10*time.Millisecond, "the streams' memory comes back: %d, was %d", srv.Stats().Memory, base)
			st, _, err := c.OpenStream(context.Background(), holdUploadProc, nil, stream.Upload, nil)
			require.NoError(t, err, "a stream opens again once memory came back")
			_ = st.CloseWithError(nil)
		})
	}
}
