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

// A server that opens a stream toward the client as soon as HELLO is done:
// the client's read loop probes the link's bandwidth at once, and the HELLO
// round trip it reads for that must already be set (under -race, a data
// race before; a zero RTT at best).
func TestStreamRightAfterHello(t *testing.T) {
	up := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 81}
	for range 5 {
		mux := rpc.NewMux()
		got := make(chan int64, 1)
		mux.Handle(up, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
			st, err := req.Stream(stream.Upload, nil)
			if err != nil {
				return nil, err
			}
			if err := req.Reply(nil); err != nil {
				return nil, err
			}
			n, _ := io.Copy(io.Discard, st)
			got <- n
			return nil, st.Close()
		})
		cc, sc := tlsPair(t, testPKI(t))
		srv := rpc.Server(sc, nil)
		sent := make(chan error, 1)
		go func() {
			select {
			case <-srv.Negotiated():
			case <-srv.Done():
				sent <- srv.Err()
				return
			}
			st, _, err := srv.OpenStream(context.Background(), up, nil, stream.Upload, nil)
			if err == nil {
				_, err = st.Write(make([]byte, 4<<20))
			}
			if err == nil {
				err = st.Close()
			}
			sent <- err
		}()
		c, err := rpc.Client(context.Background(), cc, &rpc.Options{Handlers: mux})
		require.NoError(t, err)
		select {
		case n := <-got:
			require.EqualValues(t, 4<<20, n)
		case <-time.After(30 * time.Second):
			t.Fatal("the stream did not arrive")
		}
		require.NoError(t, <-sent)
		require.NoError(t, c.Close())
		require.NoError(t, srv.Close())
	}
}
