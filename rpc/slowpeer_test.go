package rpc_test

import (
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// quickSlow reaps a message that advances less than 1 KiB in 200 ms.
func quickSlow(o *rpc.Options) *rpc.Options {
	o.MessageTimeout = 200 * time.Millisecond
	o.MinMessageRate = 5 << 10
	return o
}

// dribble sends b at one byte per interval until stop is closed or the
// write fails.
func dribble(nc net.Conn, b []byte, interval time.Duration, stop <-chan struct{}) {
	for i := range b {
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
		if _, err := nc.Write(b[i : i+1]); err != nil {
			return
		}
	}
}

// A peer that announces a large call and sends its body a byte at a time
// is closed with ErrSlowPeer, though keepalive (which counts the read loop's
// busy time as liveness) never would.
func TestSlowBodyIsReaped(t *testing.T) {
	srv, nc := rawServer(t, quickSlow(&rpc.Options{Handlers: echoMux()}))
	msg := rawFrame(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 1<<20))
	_, err := nc.Write(msg[:frame.Overhead])
	require.NoError(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go dribble(nc, msg[frame.Overhead:], 10*time.Millisecond, stop)
	select {
	case <-srv.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a peer sending its body at 100 B/s was not reaped")
	}
	assert.ErrorIs(t, srv.Err(), rpc.ErrSlowPeer)
	assert.ErrorContains(t, srv.Err(), "B/s required")
}

// A peer that stops in the middle of a message is reaped too, with
// keepalive off.
func TestSilentMidMessageIsReaped(t *testing.T) {
	srv, nc := rawServer(t, quickSlow(&rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1}))
	msg := rawFrame(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 64<<10))
	_, err := nc.Write(msg[:frame.Overhead+100])
	require.NoError(t, err)
	select {
	case <-srv.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a peer silent mid-message was not reaped")
	}
	assert.ErrorIs(t, srv.Err(), rpc.ErrSlowPeer)
}

// A peer that sends at the minimum rate or faster is not reaped, however
// long its message takes.
func TestSteadyBodyIsNotReaped(t *testing.T) {
	srv, nc := rawServer(t, quickSlow(&rpc.Options{Handlers: echoMux()}))
	p := newRawPeer(t, nc)
	msg := rawFrame(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 48<<10))
	for off := 0; off < len(msg); off += 2 << 10 { // 2 KiB per 50 ms: 40 KiB/s
		_, err := nc.Write(msg[off:min(off+2<<10, len(msg))])
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	assert.NoError(t, srv.Err())
}

// The read loop paused by a compat stream's slow reader is our silence,
// not the peer's: the whole frame has arrived, so it is not reaped.
func TestPausedCompatStreamIsNotSlowPeer(t *testing.T) {
	opts := quickSlow(&rpc.Options{Negotiation: rpc.CompatOnly, CompatStreamBuffer: 64 << 10})
	got := make(chan *rpc.Conn, 1)
	mux := rpc.NewMux()
	release := make(chan struct{})
	mux.Handle(uploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			<-release // the reader is away well past MessageTimeout
			h := sha256.New()
			if _, err := io.Copy(h, st); err == nil {
				_ = st.Close()
			}
		}()
		got <- req.Conn()
		return nil, nil
	})
	opts.Handlers = mux
	c, _ := pair(t, quickSlow(&rpc.Options{Negotiation: rpc.CompatOnly}), opts)
	st, _, err := c.OpenStream(context.Background(), uploadProc, nil, stream.Upload, nil)
	require.NoError(t, err)
	srv := <-got
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(st, source(1<<20, 3))
		if err == nil {
			err = st.Close()
		}
		done <- err
	}()
	time.Sleep(time.Second) // five MessageTimeouts with the read loop paused
	assert.NoError(t, srv.Err())
	close(release)
	require.NoError(t, <-done)
}

// Before authentication a large message is refused from its header, before
// any of its body is read; once authenticated the same call is served.
func TestLargeMessageBeforeAuthIsRefused(t *testing.T) {
	login := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 60}
	mux := echoMux()
	mux.Handle(login, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		req.Conn().Authenticate()
		return nil, nil
	})
	opts := &rpc.Options{Handlers: mux, Auth: &rpc.AuthGate{Procedures: []rpc.Procedure{login}}, MaxUnauthMessage: 64 << 10}

	srv, nc := rawServer(t, opts)
	_, err := nc.Write(rawFrame(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 100<<10))[:frame.Overhead])
	require.NoError(t, err)
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a 100 KiB call before authentication was read")
	}
	assert.ErrorIs(t, srv.Err(), frame.ErrFrameTooLarge)
	assert.ErrorContains(t, srv.Err(), "before authentication")

	srv, nc = rawServer(t, opts)
	p := newRawPeer(t, nc)
	p.send(hdr(procedure(login), frame.TypeCall, 1, frame.StatusOK), nil)
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	p.send(hdr(procedure(echoProc), frame.TypeCall, 2, frame.StatusOK), make([]byte, 100<<10))
	assert.Len(t, p.expect(frame.TypeReply, frame.StatusOK, 2), 100<<10)
	assert.NoError(t, srv.Err())
}

// A peer that asks for replies, never reads them and pings to stay alive
// is closed once they wait past MessageTimeout (plus their size at
// MinMessageRate): else it holds their memory for as long as it likes.
func TestPeerThatReadsNothingIsReaped(t *testing.T) {
	a, b := net.Pipe() // nobody reads a: the server's first write blocks
	srv := rpc.Server(b, quickSlow(&rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1}))
	defer func() { _ = a.Close(); _ = srv.Close() }()
	ping := rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
	go func() {
		if _, err := a.Write(rawFrame(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 8<<10))); err != nil {
			return
		}
		for {
			select {
			case <-srv.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := a.Write(ping); err != nil {
				return
			}
		}
	}()
	select {
	case <-srv.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a peer that reads nothing kept its replies queued")
	}
	assert.ErrorIs(t, srv.Err(), rpc.ErrPeerNotReading)
}

// A peer whose replies all went into the kernel (nothing of ours is queued
// for it) is still reaped if it reads none of them, however it pings: the
// hostile suite's "unread replies kept alive by pings" attack when most of
// its calls were refused (too many at once) and the kernel took the rest.
// Its receive buffer is small, so the replies wait in the server's send
// queue, not in its own socket.
func TestPeerWithRepliesInTheKernelIsReaped(t *testing.T) {
	// Keepalive off: the attacker's pings would hold it alive anyway, and
	// a loaded machine must not make a late ping of ours the reaper.
	opts := &rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1, MessageTimeout: 200 * time.Millisecond, MinMessageRate: 64 << 10}
	srv, nc := rawServer(t, opts)
	require.NoError(t, nc.(*net.TCPConn).SetReadBuffer(4<<10))
	for s := range uint32(32) { // 512 KiB of replies: the kernel takes them all
		_, err := nc.Write(rawFrame(hdr(procedure(echoProc), frame.TypeCall, 1+s, frame.StatusOK), make([]byte, 16<<10)))
		require.NoError(t, err)
	}
	ping := rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
	start := time.Now()
	for { // our pongs still reach the kernel: bytesOut moves
		select {
		case <-srv.Done():
			t.Logf("reaped after %v: %v", time.Since(start).Round(time.Millisecond), srv.Err())
			require.ErrorIs(t, srv.Err(), rpc.ErrPeerNotReading)
			assert.Contains(t, srv.Err().Error(), "none taken by the peer")
			return
		case <-time.After(20 * time.Millisecond):
		}
		_, err := nc.Write(ping)
		require.NoError(t, err)
		require.Less(t, time.Since(start), 20*time.Second, "a peer that pings but reads none of the replies the kernel holds was not reaped")
	}
}

// A peer that reads slowly but at the minimum rate is not reaped, however
// long its reply takes to write.
func TestSlowReaderAtTheMinimumIsNotReaped(t *testing.T) {
	srv, nc := rawServer(t, quickSlow(&rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1}))
	require.NoError(t, nc.(*net.TCPConn).SetReadBuffer(4<<10))
	p := newRawPeer(t, nc)
	p.send(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 4<<20))
	time.Sleep(300 * time.Millisecond) // the reply fills the socket buffers
	var got int
	for { // 80 KiB/s, over the 5 KiB/s minimum
		buf := make([]byte, 4<<10)
		n, err := nc.Read(buf)
		require.NoError(t, err, "after %d bytes of the reply; the server closed with %v", got, srv.Err())
		got += n
		if got > 256<<10 {
			break // long enough: one Write of the reply outlasted many MessageTimeouts
		}
		time.Sleep(50 * time.Millisecond)
	}
	assert.NoError(t, srv.Err())
}

// stalledReader is the server's socket as a starved read loop sees it:
// once past half a MiB, one Read waits stall first (under -race on a loaded
// machine a goroutine can miss several MessageTimeouts). NetConn exposes
// the socket, as transport's wrappers do.
type stalledReader struct {
	net.Conn
	read  int
	stall time.Duration
}

func (c *stalledReader) Read(p []byte) (int, error) {
	if c.read >= 512<<10 && c.stall > 0 {
		time.Sleep(c.stall)
		c.stall = 0
	}
	n, err := c.Conn.Read(p)
	c.read += n
	return n, err
}

func (c *stalledReader) NetConn() net.Conn { return c.Conn }

// A message whose bytes have all arrived is not the peer's to be reaped
// for when our own read loop is late taking them: slowCheck sees them in
// the socket's receive queue (TestSlowReaderAtTheMinimumIsNotReaped was
// once reaped at 0.33 s so under -race, ErrSlowPeer while its 4 MiB call
// sat in the kernel).
func TestOurSlowReadLoopIsNotThePeers(t *testing.T) {
	a, b := tcpPair(t)
	srv := rpc.Server(&stalledReader{Conn: b, stall: time.Second}, quickSlow(&rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1}))
	t.Cleanup(func() { _ = srv.Close(); _ = a.Close() })
	p := newRawPeer(t, a)
	payload := dirData(4<<20, 3)
	p.send(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), payload) // returns once the kernel has it all
	got := p.expect(frame.TypeReply, frame.StatusOK, 1)
	assert.Equal(t, payload, got, "the echo")
	assert.NoError(t, srv.Err())
}
