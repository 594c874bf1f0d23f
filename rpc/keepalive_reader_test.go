package rpc_test

import (
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// slowReader hands on at most 16 KiB per Read, after a pause, until a
// time, and then reads at full speed.
type slowReader struct {
	r     io.Reader
	pause time.Duration
	until time.Time
}

func (s slowReader) Read(p []byte) (int, error) {
	if time.Now().After(s.until) {
		return s.r.Read(p)
	}
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), 16<<10)])
}

// A client downloading slowly in compat mode pauses its read loop behind
// its stream buffer, so the server's pings wait in the socket behind the
// data (megabytes in the socket buffers), and their pongs come far later
// than the server's keepalive deadline (400 ms here). The client never
// pings. The server must still not declare it dead: the client's TCP keeps
// acknowledging what the server writes, so the client is reading. Before,
// the server closed it with ErrKeepaliveTimeout. (Once the server has
// written everything and the client's kernel holds it, nothing tells the
// server the client still reads: so the slow phase lasts 1.5 s, far less
// than 32 MiB takes at that rate, and then the client reads at full speed.)
func TestKeepaliveSparesAPeerThatIsReadingSlowly(t *testing.T) {
	const size = 32 << 20
	c, srv := pair(t,
		&rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: -1, CompatStreamBuffer: 1 << 20},
		&rpc.Options{Handlers: streamMux(t), KeepaliveInterval: 200 * time.Millisecond, KeepaliveCount: 1})
	st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(size, 7), stream.Download, nil)
	require.NoError(t, err)
	h := sha256.New()
	// 16 KiB each 5 ms: about 3 MB/s, so a pong behind the couple of
	// megabytes the socket buffers hold arrives after half a second or
	// more, while the TCP window, which Linux keeps shut until a good part
	// of the receive buffer is free, reopens every 100-200 ms.
	n, err := io.Copy(h, slowReader{st, 5 * time.Millisecond, time.Now().Add(1500 * time.Millisecond)})
	require.NoError(t, err, "server: %v", srv.Err())
	require.EqualValues(t, size, n)
	require.Equal(t, digest(size, 7), h.Sum(nil))
	require.NoError(t, st.Close())
	require.NoError(t, srv.Err())
	require.Positive(t, srv.Stats().PingsSent, "the server did ping: the test means something")
}

// The other half: a peer that stops reading is still declared dead once
// our writes stop going out (the socket buffers are full).
func TestKeepaliveReapsAPeerThatStopsReading(t *testing.T) {
	c, srv := pair(t,
		&rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: -1, CompatStreamBuffer: 1 << 20},
		&rpc.Options{Handlers: streamMux(t), KeepaliveInterval: 20 * time.Millisecond, KeepaliveCount: 1})
	st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(1<<30, 7), stream.Download, nil)
	require.NoError(t, err)
	defer st.Close()
	select {
	case <-srv.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("a peer that reads nothing was not reaped in 60 s")
	}
	require.ErrorIs(t, srv.Err(), rpc.ErrKeepaliveTimeout)
}
