package rpc_test

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// liveHeap is the heap still reachable after a full GC.
func liveHeap() int64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// floodCalls writes n echo calls of size bytes each to nc and never reads.
func floodCalls(nc net.Conn, n, size int) <-chan error {
	done := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(nc, 256<<10)
		payload := make([]byte, size)
		for i := range n {
			if _, err := bw.Write(rawFrame(hdr(procedure(echoProc), frame.TypeCall, uint32(i+1), frame.StatusOK), payload)); err != nil {
				done <- err
				return
			}
		}
		done <- bw.Flush()
	}()
	return done
}

// A peer that sends large echo calls and reads nothing: the replies that
// wait for the writer stay within the connection's memory budget (the rest
// fail with an error reply), and the handlers that wait hold their
// MaxConcurrentCalls slots, so neither memory nor goroutines grow with the
// calls sent.
func TestUnreadLargeRepliesStayInTheBudget(t *testing.T) {
	const budget, calls, size, slots = 16 << 20, 32, 2 << 20, 8
	base, goroutines := liveHeap(), runtime.NumGoroutine()
	a, b := net.Pipe() // nobody reads a: the server's first write blocks
	srv := rpc.Server(b, &rpc.Options{Handlers: echoMux(), ConnectionMemory: budget, MaxConcurrentCalls: slots, KeepaliveInterval: -1})
	defer func() { _ = a.Close(); _ = srv.Close() }()
	sent := floodCalls(a, calls, size)
	select {
	case err := <-sent:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the server stopped reading calls")
	}
	require.Eventually(t, func() bool { return srv.Stats().FramesReceived == calls }, 30*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond) // let the last handlers queue or park
	grew := liveHeap() - base
	t.Logf("heap grew by %d MiB after %d MiB of calls; %d calls serving, %d goroutines more", grew>>20, calls*size>>20, srv.Stats().CallsServing, runtime.NumGoroutine()-goroutines)
	assert.Less(t, grew, int64(budget+8<<20), "heap held for a peer that reads nothing")
	assert.LessOrEqual(t, runtime.NumGoroutine()-goroutines, slots+8, "goroutines parked for a peer that reads nothing")
	assert.NoError(t, srv.Err())
}

// A flood of small calls from a peer that reads nothing: handler goroutines
// stay within MaxConcurrentCalls, and once even the error replies no longer
// fit the budget the connection closes, saying why.
func TestUnreadSmallRepliesCloseTheConnection(t *testing.T) {
	const slots = 16
	goroutines := runtime.NumGoroutine()
	a, b := net.Pipe()
	srv := rpc.Server(b, &rpc.Options{Handlers: echoMux(), ConnectionMemory: 1 << 20, MaxConcurrentCalls: slots, KeepaliveInterval: -1})
	defer func() { _ = a.Close(); _ = srv.Close() }()
	sent := floodCalls(a, 100_000, 16)
	peak := 0
	for done := false; !done; {
		select {
		case <-srv.Done():
			done = true
		case <-time.After(time.Millisecond):
			peak = max(peak, runtime.NumGoroutine()-goroutines)
		case <-time.After(60 * time.Second):
			t.Fatal("the connection stayed open")
		}
	}
	assert.ErrorIs(t, srv.Err(), rpc.ErrMemoryBudget)
	assert.ErrorContains(t, srv.Err(), "pile up unread")
	assert.LessOrEqual(t, peak, slots+8, "goroutines at the peak")
	_ = a.Close()
	<-sent
}

// A call whose payload does not fit the connection's budget fails with an
// error reply that says so, its body read and dropped as it arrives; the
// connection goes on.
func TestCallOverTheBudgetFails(t *testing.T) {
	srv, nc := rawServer(t, &rpc.Options{Handlers: echoMux(), ConnectionMemory: 1 << 20})
	p := newRawPeer(t, nc)
	p.send(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 2<<20))
	e, err := frame.DecodeError(p.expect(frame.TypeReply, frame.StatusError, 1))
	require.NoError(t, err)
	assert.Contains(t, e.Error(), "memory budget")
	assert.Contains(t, e.Error(), "call of 2097152 bytes")
	p.send(hdr(procedure(echoProc), frame.TypeCall, 2, frame.StatusOK), []byte("still here"))
	assert.Equal(t, []byte("still here"), p.expect(frame.TypeReply, frame.StatusOK, 2))
	assert.NoError(t, srv.Err())
}

// Every charge to the budget is given back: after calls both ways, large
// and small, failed calls, calls over the budget, messages and a stream,
// both sides hold nothing once idle.
func TestBudgetReturnsToZero(t *testing.T) {
	mux := streamMux(t)
	got := make(chan struct{}, 100)
	mux.HandleMessage(eventProc, func(ctx context.Context, _ *rpc.Message) { got <- struct{}{} })
	opts := &rpc.Options{Handlers: mux, ConnectionMemory: 4 << 20}
	c, srv := pair(t, opts, opts)
	for _, n := range []int{0, 10, 100 << 10, 1 << 20, 3 << 20, 5 << 20} {
		for _, conn := range []*rpc.Conn{c, srv} {
			_, _ = conn.Call(context.Background(), echoProc, make([]byte, n)) // over the budget: an error, counted too
			_, err := conn.Call(context.Background(), failProc, nil)
			require.Error(t, err)
		}
	}
	for range 10 {
		require.NoError(t, c.Send(context.Background(), eventProc, make([]byte, 64<<10)))
		<-got
	}
	download(t, c, 8<<20, 1)
	require.Eventually(t, func() bool { return c.Stats().Memory == 0 && srv.Stats().Memory == 0 }, 10*time.Second, time.Millisecond,
		"charged after the work: client %d, server %d", c.Stats().Memory, srv.Stats().Memory)
}
