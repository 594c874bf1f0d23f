package rpc

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// flood writes n copies of msg to w, then reports the write's error.
func flood(w net.Conn, msg []byte, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(w, 1<<20)
		for range n {
			if _, err := bw.Write(msg); err != nil {
				done <- err
				return
			}
		}
		done <- bw.Flush()
	}()
	return done
}

// A peer that pings and never reads: the PONGs it is owed do not pile up
// (one queued PONG answers any number of pings), and the pings keep the
// connection alive as keepalive says they should.
func TestPingFloodQueuesOnePong(t *testing.T) {
	a, b := net.Pipe() // nobody reads a: our first write blocks
	c := Server(b, &Options{KeepaliveInterval: -1})
	defer func() { _ = a.Close(); _ = c.Close() }()
	ping := frame.Append(nil, frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
	const n = 100_000
	require.NoError(t, <-flood(a, ping, n))
	require.Eventually(t, func() bool { return c.stats.framesIn.Load() == n }, 30*time.Second, time.Millisecond)
	c.sched.mu.Lock()
	queued := len(c.sched.ctrl)
	c.sched.mu.Unlock()
	assert.LessOrEqual(t, queued, 2*frame.Overhead, "bytes of PONG queued after %d pings", n)
	assert.NoError(t, c.Err())
}

// A peer that sends credit-worthy traffic and never reads hits the control
// queue's bound and is cut off with an error that says why.
func TestControlBacklogClosesTheConnection(t *testing.T) {
	a, b := net.Pipe()
	c := Server(b, &Options{KeepaliveInterval: -1})
	defer func() { _ = a.Close(); _ = c.Close() }()
	var credit [frame.Overhead + frame.CreditPayloadSize]byte
	h := frame.Header{Prog: frame.ControlProgram, Vers: frame.ControlVersion, Proc: frame.ControlCredit, Type: frame.TypeMessage}
	frame.PutHeader(credit[:], h, frame.CreditPayloadSize)
	// The writer takes one batch, blocks writing it, and the rest waits:
	// twice the bound (and one) must be more than can be queued.
	for range 2*maxControlQueue + 1 {
		c.sched.sendControl(credit[:], false) // as the read loop queues credit
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection stayed open with its control queue over the bound")
	}
	assert.ErrorIs(t, c.Err(), errControlBacklog)
	assert.ErrorContains(t, c.Err(), "reads nothing")
}

// A peer that floods a slow message handler with empty MESSAGEs is cut off
// once the queue's bound is reached: each message counts, not only its
// payload bytes.
func TestEmptyMessageFloodIsBounded(t *testing.T) {
	a, b := net.Pipe()
	block := make(chan struct{})
	slow := Procedure{0x1234, 1, 9}
	mux := NewMux()
	mux.HandleMessage(slow, func(ctx context.Context, _ *Message) {
		select {
		case <-block:
		case <-ctx.Done():
		}
	})
	c, err := Client(context.Background(), b, &Options{Negotiation: CompatOnly, KeepaliveInterval: -1, Handlers: mux})
	require.NoError(t, err)
	defer func() { close(block); _ = a.Close(); _ = c.Close() }()
	go func() { _, _ = bufio.NewReader(a).WriteTo(discard{}) }()

	msg := frame.Append(nil, frame.Header{Prog: slow.Prog, Vers: slow.Vers, Proc: slow.Proc, Type: frame.TypeMessage}, nil)
	n := maxQueuedMessageBytes/messageCost + 2
	writeErr := flood(a, msg, n)
	select {
	case <-c.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the connection stayed open behind a flood of empty messages")
	}
	assert.ErrorIs(t, c.Err(), errSlowMessages)
	_ = a.Close()
	<-writeErr
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
