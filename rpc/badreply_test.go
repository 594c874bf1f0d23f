package rpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// A reply that is bad or cut short closes the connection, and the call it
// answered ends with the connection's error; a caller that gave up on it
// meanwhile has returned already.

var replyProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 1}

// nativeRawPeer returns a native client whose peer is a raw conn the test
// drives: it answers the client's HELLO with a bound on calls, so that the
// client holds call slots.
func nativeRawPeer(t *testing.T) (*rpc.Conn, *rawPeer, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	peer := newRawPeer(t, b)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		h, _ := peer.recv()
		rh := frame.Header{Prog: frame.ControlProgram, Vers: frame.ControlVersion, Proc: frame.ControlHello, Type: frame.TypeReply, Serial: h.Serial}
		peer.send(rh, frame.EncodeHello(&frame.Hello{Version: 1, Features: []string{frame.FeatureFlowControl, frame.FeatureLargeFrames, frame.FeatureBidi}, MaxStreamPayload: 1 << 20, InitialWindow: 1 << 20, MaxCalls: 8}))
	}()
	c, err := rpc.Client(context.Background(), a, &rpc.Options{KeepaliveInterval: -1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.Equal(t, rpc.ModeNative, c.Mode())
	// The goroutine's WriteFrame may still run after its Write returned
	// (the client has read the reply): the test's own sends would race it
	// on the peer's frame.Writer (seen once under -race).
	<-answered
	return c, peer, b
}

func awaitCall(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the call never returned")
		return nil
	}
}

func TestCallAbandonedWhileItsReplyIsCutShortReturns(t *testing.T) {
	c, peer, raw := nativeRawPeer(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := c.Call(ctx, replyProc, nil); res <- err }()
	h, _ := peer.recv()
	msg := frame.Append(nil, frame.Header{Prog: replyProc.Prog, Vers: replyProc.Vers, Proc: replyProc.Proc, Type: frame.TypeReply, Serial: h.Serial}, make([]byte, 1000))
	_, err := raw.Write(msg[:frame.Overhead+10]) // 10 of the 1000 bytes announced
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // let the read loop start on the payload
	cancel()
	require.ErrorIs(t, awaitCall(t, res), context.Canceled, "the caller gave up, and returns at once")
	_ = raw.Close() // the peer dies mid-payload
	<-c.Done()
}

func TestCallWhoseReplyIsBadEndsWithTheConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(serial uint32) []byte
		cut   bool
	}{
		{"a reply for another procedure", func(serial uint32) []byte {
			return frame.Append(nil, frame.Header{Prog: replyProc.Prog, Vers: replyProc.Vers, Proc: 2, Type: frame.TypeReply, Serial: serial}, nil)
		}, false},
		{"a reply with status CONTINUE", func(serial uint32) []byte {
			return frame.Append(nil, frame.Header{Prog: replyProc.Prog, Vers: replyProc.Vers, Proc: replyProc.Proc, Type: frame.TypeReply, Serial: serial, Status: frame.StatusContinue}, nil)
		}, false},
		{"a reply cut short", func(serial uint32) []byte {
			return frame.Append(nil, frame.Header{Prog: replyProc.Prog, Vers: replyProc.Vers, Proc: replyProc.Proc, Type: frame.TypeReply, Serial: serial}, make([]byte, 1000))[:frame.Overhead+10]
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer, raw := nativeRawPeer(t)
			res := make(chan error, 1)
			go func() { _, err := c.Call(context.Background(), replyProc, nil); res <- err }()
			h, _ := peer.recv()
			_, err := raw.Write(tc.reply(h.Serial))
			require.NoError(t, err)
			if tc.cut {
				_ = raw.Close()
			}
			err = awaitCall(t, res)
			require.ErrorIs(t, err, net.ErrClosed)
			var ce *rpc.ClosedError
			require.ErrorAs(t, err, &ce)
		})
	}
}
