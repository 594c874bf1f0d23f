package rpc_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var echoDuplexProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 60}

// io.Copy into a stream from an interactive source (a socket: an NBD
// client's request, a console's keystroke) sends each read as it comes. A
// ReadFrom that waited to fill a whole frame deadlocked a request/response
// protocol tunnelled through the stream: the request sat in the sender until
// 64 KiB more arrived, and the response it waited for never came.
func TestReadFromSendsWhatEachReadReturns(t *testing.T) {
	for name, mode := range map[string]rpc.Negotiation{"native": rpc.RequireNative, "compat": rpc.CompatOnly} {
		t.Run(name, func(t *testing.T) {
			mux := rpc.NewMux()
			mux.Handle(echoDuplexProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
				st, err := req.Stream(stream.Duplex, nil)
				if err != nil {
					return nil, err
				}
				go func() {
					_, _ = io.Copy(st, struct{ io.Reader }{st}) // echo: the server's ReadFrom too
					_ = st.Close()                              // finishes ours and acknowledges the client's end
				}()
				return nil, nil
			})
			c, _ := pair(t, &rpc.Options{Negotiation: mode}, &rpc.Options{Handlers: mux, Negotiation: mode})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			st, _, err := c.OpenStream(ctx, echoDuplexProc, nil, stream.Duplex, nil)
			require.NoError(t, err)
			context.AfterFunc(ctx, func() { _ = st.CloseWithError(ctx.Err()) })

			pr, pw := io.Pipe()
			copied := make(chan error, 1)
			go func() { _, err := io.Copy(st, pr); copied <- err }() // ReadFrom from the pipe

			for i, req := range []string{"NBD_CMD_READ", "x", "a third request"} {
				_, err := pw.Write([]byte(req)) // one request, then wait for its answer
				require.NoError(t, err)
				got := make([]byte, len(req))
				_, err = io.ReadFull(st, got)
				require.NoError(t, err, "request %d: its echo never came back (ctx ends the wait)", i)
				require.Equal(t, req, string(got))
			}
			require.NoError(t, pw.Close())
			require.NoError(t, <-copied)
			require.NoError(t, st.CloseWrite())
			_, err = io.Copy(io.Discard, st)
			require.NoError(t, err)
			require.NoError(t, st.Close())
		})
	}
}
