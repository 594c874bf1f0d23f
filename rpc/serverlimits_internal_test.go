package rpc

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// Whatever connections do (refused, closed before or after signing in,
// holding memory when they go), Serve's counts and budget return to zero.
func TestServeLimitsReturnToZero(t *testing.T) {
	signIn := Procedure{0x1234, 1, 60}
	echo := Procedure{0x1234, 1, 1}
	mux := NewMux()
	mux.Handle(signIn, func(ctx context.Context, req *Request) ([]byte, error) { req.Conn().Authenticate(); return nil, nil })
	mux.Handle(echo, func(ctx context.Context, req *Request) ([]byte, error) { return req.Payload, nil })
	got := make(chan *serverLimits, 1)
	testHookServeLimits = func(l *serverLimits) { got <- l }
	defer func() { testHookServeLimits = nil }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, &Options{Handlers: mux, Auth: &AuthGate{Procedures: []Procedure{signIn}},
			MaxConnections: 10, MaxUnauthenticated: 5, ServerMemory: 4 << 20, ConnectionMemory: 2 << 20}, nil)
	}()
	defer func() { cancel(); <-served }()

	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			defer nc.Close()
			if i%3 == 0 {
				return // gone before a word
			}
			w := bufio.NewWriter(nc)
			_, _ = w.Write(frame.Append(nil, frame.Header{Prog: signIn.Prog, Vers: signIn.Vers, Proc: signIn.Proc, Serial: 1}, nil))
			if i%3 == 1 { // and a call that holds memory, unread
				_, _ = w.Write(frame.Append(nil, frame.Header{Prog: echo.Prog, Vers: echo.Vers, Proc: echo.Proc, Serial: 2}, make([]byte, 1<<20)))
			}
			_ = w.Flush()
			time.Sleep(50 * time.Millisecond)
		}()
	}
	wg.Wait()
	limits := <-got
	require.Eventually(t, func() bool {
		return limits.conns.Load() == 0 && limits.anon.Load() == 0 && limits.mem.used.Load() == 0
	}, 10*time.Second, 5*time.Millisecond, "left: %d connections, %d unauthenticated, %d bytes", limits.conns.Load(), limits.anon.Load(), limits.mem.used.Load())
}
