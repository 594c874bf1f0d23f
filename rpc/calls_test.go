package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

var (
	failProc  = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 10}
	blockProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 11}
	eventProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 12}
	loginProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 13}
)

func echoMux() *rpc.Mux {
	mux := rpc.NewMux()
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return req.Payload, nil })
	mux.Handle(failProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return nil, &rpc.Error{Code: 42, Domain: 12, Message: ptr("Domain not found"), Level: frame.LevelError, Int1: -1, Int2: -1}
	})
	return mux
}

func ptr[T any](v T) *T { return &v }

func TestConcurrentCallsPairRepliesWithCalls(t *testing.T) {
	c, _ := pair(t, nil, &rpc.Options{Handlers: echoMux()})
	const goroutines, perG = 50, 20
	var wg sync.WaitGroup
	var mismatches atomic.Int32
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				want := fmt.Sprintf("g%d-call%d-%s", g, i, make([]byte, (g*i)%300))
				got, err := c.Call(context.Background(), echoProc, []byte(want))
				if err != nil || string(got) != want {
					mismatches.Add(1)
					t.Errorf("call %d/%d: got %q, %v", g, i, got, err)
				}
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, mismatches.Load())
	st := c.Stats()
	assert.GreaterOrEqual(t, st.FramesSent, int64(goroutines*perG))
	assert.GreaterOrEqual(t, st.FramesReceived, int64(goroutines*perG))
}

func TestHandlerErrorIsTyped(t *testing.T) {
	c, _ := pair(t, nil, &rpc.Options{Handlers: echoMux()})
	_, err := c.Call(context.Background(), failProc, nil)
	var re *rpc.Error
	require.ErrorAs(t, err, &re)
	assert.EqualValues(t, 42, re.Code)
	assert.EqualValues(t, 12, re.Domain)
	assert.Equal(t, "Domain not found", re.Text())

	// A plain Go error arrives as an internal error with its text.
	mux := rpc.NewMux()
	mux.Handle(failProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return nil, errors.New("disk on fire")
	})
	mux.Handle(blockProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { panic("boom") })
	c2, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	_, err = c2.Call(context.Background(), failProc, nil)
	require.ErrorAs(t, err, &re)
	assert.EqualValues(t, frame.CodeInternalError, re.Code)
	assert.Equal(t, "disk on fire", re.Text())
	_, err = c2.Call(context.Background(), blockProc, nil)
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Text(), "handler panic: boom")

	_, err = c2.Call(context.Background(), rpc.Procedure{Prog: 9, Vers: 9, Proc: 9}, nil)
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Text(), "unknown procedure 9")
}

func TestCancelledCallReturnsAtOnceAndLateReplyIsDropped(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	mux := echoMux()
	mux.Handle(blockProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		entered <- struct{}{}
		<-release
		return []byte("late"), nil
	})
	c, srv := pair(t, nil, &rpc.Options{Handlers: mux})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, blockProc, nil)
		errc <- err
	}()
	<-entered
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled call did not return")
	}
	close(release)
	// The late reply arrives and is dropped; the connection carries on.
	require.Eventually(t, func() bool { return srv.Stats().CallsServing == 0 }, 10*time.Second, time.Millisecond)
	got, err := c.Call(context.Background(), echoProc, []byte("after"))
	require.NoError(t, err)
	assert.Equal(t, "after", string(got))
	assert.NoError(t, c.Err())
}

func TestMessagesFlowBothWaysInNativeMode(t *testing.T) {
	type rec struct {
		mu  sync.Mutex
		got []string
	}
	var atServer, atClient rec
	handler := func(r *rec) rpc.MessageHandler {
		return func(ctx context.Context, m *rpc.Message) {
			r.mu.Lock()
			r.got = append(r.got, string(m.Payload))
			r.mu.Unlock()
		}
	}
	smux, cmux := echoMux(), rpc.NewMux()
	smux.HandleMessage(eventProc, handler(&atServer))
	cmux.HandleMessage(eventProc, handler(&atClient))
	cmux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return append([]byte("client:"), req.Payload...), nil
	})
	c, srv := pair(t, &rpc.Options{Handlers: cmux}, &rpc.Options{Handlers: smux})
	require.Equal(t, rpc.ModeNative, c.Mode())
	<-srv.Negotiated()
	require.Equal(t, rpc.ModeNative, srv.Mode())

	var want []string
	for i := range 100 {
		m := fmt.Sprintf("event %d", i)
		want = append(want, m)
		require.NoError(t, c.Send(context.Background(), eventProc, []byte(m)))
		require.NoError(t, srv.Send(context.Background(), eventProc, []byte(m)))
	}
	for _, r := range []*rec{&atServer, &atClient} {
		require.Eventually(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.got) == len(want) }, 10*time.Second, time.Millisecond)
		assert.Equal(t, want, r.got, "messages arrive in order")
	}
	// The accepting side calls too.
	got, err := srv.Call(context.Background(), echoProc, []byte("x"))
	require.NoError(t, err)
	assert.Equal(t, "client:x", string(got))
}

func TestAuthGateHoldsCallsUntilAuthenticated(t *testing.T) {
	mux := echoMux()
	mux.Handle(loginProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		if string(req.Payload) != "secret" {
			return nil, rpc.NewError(frame.CodeAuthFailed, "bad password")
		}
		req.Conn().Authenticate()
		return nil, nil
	})
	c, srv := pair(t, nil, &rpc.Options{Handlers: mux, Auth: &rpc.AuthGate{Procedures: []rpc.Procedure{loginProc}}})
	_, err := c.Call(context.Background(), echoProc, []byte("x"))
	var re *rpc.Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "authentication required", re.Text())
	assert.EqualValues(t, frame.CodeRPC, re.Code)

	_, err = c.Call(context.Background(), loginProc, []byte("guess"))
	require.ErrorAs(t, err, &re)
	assert.EqualValues(t, frame.CodeAuthFailed, re.Code)
	assert.False(t, srv.Authenticated())

	_, err = c.Call(context.Background(), loginProc, []byte("secret"))
	require.NoError(t, err)
	got, err := c.Call(context.Background(), echoProc, []byte("x"))
	require.NoError(t, err)
	assert.Equal(t, "x", string(got))
}

func TestConcurrencyBound(t *testing.T) {
	const bound = 4
	var running, peak atomic.Int32
	mux := echoMux()
	mux.Handle(blockProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond) // long enough that concurrent calls overlap even on a loaded machine
		running.Add(-1)
		return nil, nil
	})
	// Native: the client learns the bound and waits; every call succeeds.
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux, MaxConcurrentCalls: bound})
	var wg sync.WaitGroup
	for range 4 * bound {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Call(context.Background(), blockProc, nil)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, peak.Load(), int32(bound))

	// Compat: calls over the bound get an error reply saying so.
	c2, _ := pair(t, &rpc.Options{Negotiation: rpc.CompatOnly}, &rpc.Options{Handlers: mux, MaxConcurrentCalls: 1})
	var refused atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c2.Call(context.Background(), blockProc, nil)
			var re *rpc.Error
			if errors.As(err, &re) {
				assert.Contains(t, re.Text(), "too many concurrent calls (limit 1)")
				refused.Add(1)
			} else {
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	assert.Positive(t, refused.Load())
}

// blockingMux is echoMux with blockProc, whose handler returns once release
// is closed or the connection ends.
func blockingMux(release <-chan struct{}) *rpc.Mux {
	mux := echoMux()
	mux.Handle(blockProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	return mux
}

// A call whose ctx ends while the peer still runs it keeps its slot of the
// peer's bound until the late reply: a native caller then waits, as the
// bound promises, instead of being refused for a call it gave up on.
func TestCancelledCallKeepsItsSlotUntilTheReply(t *testing.T) {
	release := make(chan struct{})
	mux := blockingMux(release)
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux, MaxConcurrentCalls: 1})
	require.Equal(t, rpc.ModeNative, c.Mode())
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, blockProc, nil)
		first <- err
	}()
	require.Eventually(t, func() bool { return c.Stats().FramesSent >= 2 }, 10*time.Second, time.Millisecond) // HELLO, the call
	cancel()
	require.ErrorIs(t, <-first, context.Canceled)

	second := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), echoProc, []byte("after"))
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("the second call did not wait for the peer's slot: %v", err)
	case <-time.After(100 * time.Millisecond): // it waits; nothing it could do proves it sooner
	}
	close(release) // the late reply frees the slot
	require.NoError(t, <-second)
}

func TestCloseUnblocksEveryWaiter(t *testing.T) {
	release := make(chan struct{})
	mux := blockingMux(release)
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := c.Call(context.Background(), blockProc, nil)
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return len(errs) == 0 }, time.Second, 10*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, c.Close())
	for range 10 {
		err := <-errs
		require.ErrorIs(t, err, net.ErrClosed)
		var ce *rpc.ClosedError
		require.ErrorAs(t, err, &ce)
		assert.Contains(t, err.Error(), "closed by Close")
	}
	_, err := c.Call(context.Background(), echoProc, nil)
	require.ErrorIs(t, err, net.ErrClosed)
	close(release)
}
