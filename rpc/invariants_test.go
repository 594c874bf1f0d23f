package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

var (
	invSlow       = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 201}
	invReplyErr   = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 202}
	invReplyAtEnd = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 203}
	invMsg        = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 204}
)

// invWorld records what the invariants are checked against.
type invWorld struct {
	t        *testing.T
	mu       sync.Mutex
	ctxs     []context.Context // every handler's ctx
	results  []error           // every blocking call's outcome
	problems []string
	wg       sync.WaitGroup // blocking calls in flight
	conns    []*rpc.Conn
}

func (w *invWorld) problem(f string, a ...any) {
	w.mu.Lock()
	w.problems = append(w.problems, fmt.Sprintf(f, a...))
	w.mu.Unlock()
}

func (w *invWorld) mux() *rpc.Mux {
	m := rpc.NewMux()
	note := func(ctx context.Context) {
		w.mu.Lock()
		w.ctxs = append(w.ctxs, ctx)
		w.mu.Unlock()
	}
	m.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		note(ctx)
		return req.Payload, nil
	})
	m.Handle(invSlow, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		note(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(rand.Intn(3000)) * time.Microsecond):
		}
		return nil, nil
	})
	m.Handle(invReplyErr, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		note(ctx)
		if err := req.Reply([]byte("ok")); err != nil {
			return nil, err
		}
		return nil, errors.New("after the reply")
	})
	m.Handle(invReplyAtEnd, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		note(ctx)
		<-ctx.Done() // only the connection's close ends it
		if err := req.Reply(nil); err == nil {
			w.problem("Reply after the close succeeded")
		}
		return nil, nil
	})
	m.HandleMessage(invMsg, func(ctx context.Context, msg *rpc.Message) { note(ctx) })
	return m
}

// do runs a blocking call and records its outcome; it must end.
func (w *invWorld) do(name string, f func() error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		err := f()
		var ce *rpc.ClosedError
		var re *rpc.Error
		switch {
		case err == nil, errors.As(err, &ce), errors.As(err, &re),
			errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		default:
			w.problem("%s: unexpected error %T %v", name, err, err)
		}
		w.mu.Lock()
		w.results = append(w.results, err)
		w.mu.Unlock()
	}()
}

func (w *invWorld) calls(c *rpc.Conn, p rpc.Procedure, n int, timeout time.Duration) {
	for i := 0; i < n; i++ {
		w.do("Call", func() error {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, time.Duration(rand.Int63n(int64(timeout))))
			}
			defer cancel()
			_, err := c.Call(ctx, p, []byte("x"))
			return err
		})
	}
}

func (w *invWorld) closeAsync(c *rpc.Conn) {
	w.do("Close", func() error { return c.Close() })
}

type invCase struct {
	name string
	run  func(w *invWorld)
}

func invPair(w *invWorld, copts, sopts *rpc.Options) (*rpc.Conn, *rpc.Conn, error) {
	cc, sc := tlsPair(w.t, testPKI(w.t))
	if sopts == nil {
		sopts = &rpc.Options{}
	}
	if copts == nil {
		copts = &rpc.Options{}
	}
	copts.Handlers, sopts.Handlers = w.mux(), w.mux()
	srv := rpc.Server(sc, sopts)
	w.conns = append(w.conns, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpc.Client(ctx, cc, copts)
	if c != nil {
		w.conns = append(w.conns, c)
	}
	return c, srv, err
}

func invCases() []invCase {
	cases := []invCase{
		{"close both sides during a burst", func(w *invWorld) {
			c, s, _ := invPair(w, nil, nil)
			w.calls(c, invSlow, 200, 0)
			w.calls(s, invSlow, 200, 0)
			time.Sleep(2 * time.Millisecond)
			w.closeAsync(c)
			w.closeAsync(s)
		}},
		{"close with a full call queue, peer not reading", func(w *invWorld) {
			a, b := tcpPair(w.t)
			defer a.Close()
			c, _ := rpc.Client(context.Background(), b, &rpc.Options{Negotiation: rpc.CompatOnly})
			w.conns = append(w.conns, c)
			big := make([]byte, 1<<20)
			for i := 0; i < 24; i++ {
				w.do("Call", func() error { _, err := c.Call(context.Background(), echoProc, big); return err })
			}
			time.Sleep(200 * time.Millisecond)
			w.closeAsync(c)
		}},
		{"Reply then an error", func(w *invWorld) {
			c, _, _ := invPair(w, nil, nil)
			w.do("Call", func() error {
				out, err := c.Call(context.Background(), invReplyErr, nil)
				if err == nil && string(out) != "ok" {
					w.problem("reply %q", out)
				}
				return err
			})
			w.wg.Wait()
		}},
		{"Reply racing the close", func(w *invWorld) {
			c, s, _ := invPair(w, nil, nil)
			w.calls(c, invReplyAtEnd, 20, 0)
			time.Sleep(5 * time.Millisecond)
			w.closeAsync(s)
		}},
		{"cancel calls in bulk while replies arrive", func(w *invWorld) {
			c, _, _ := invPair(w, nil, &rpc.Options{MaxConcurrentCalls: 8})
			w.calls(c, invSlow, 400, 3*time.Millisecond)
			w.calls(c, echoProc, 100, 200*time.Microsecond)
			w.wg.Wait()
			// every slot came back: a call within the limit succeeds
			for i := 0; i < 8; i++ {
				w.do("Call after", func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_, err := c.Call(ctx, invSlow, nil)
					if err != nil {
						w.problem("call after the bulk cancel: %v", err)
					}
					return err
				})
			}
			w.wg.Wait()
		}},
		{"keepalive timeout while a handler runs", func(w *invWorld) {
			srv, raw := rawServer(w.t, &rpc.Options{Handlers: w.mux(), KeepaliveInterval: 10 * time.Millisecond, KeepaliveCount: 1})
			w.conns = append(w.conns, srv)
			p := newRawPeer(w.t, raw)
			p.send(hdr(procedure(invReplyAtEnd), frame.TypeCall, 1, frame.StatusOK), nil)
			select {
			case <-srv.Done():
				if !errors.Is(srv.Err(), rpc.ErrKeepaliveTimeout) {
					w.problem("closed with %v", srv.Err())
				}
			case <-time.After(2 * time.Second):
				w.problem("no keepalive timeout")
			}
		}},
		{"messages flooding while Close", func(w *invWorld) {
			c, s, _ := invPair(w, nil, nil)
			for g := 0; g < 4; g++ {
				w.do("Send loop", func() error {
					for i := 0; i < 5000; i++ {
						if err := c.Send(context.Background(), invMsg, make([]byte, 100)); err != nil {
							return err
						}
					}
					return nil
				})
			}
			time.Sleep(3 * time.Millisecond)
			w.closeAsync(s)
			w.closeAsync(c)
		}},
		{"a peer that closes mid-HELLO", func(w *invWorld) {
			a, b := tcpPair(w.t)
			go func() {
				p := newRawPeer(w.t, b)
				buf := make([]byte, 10) // half the HELLO's header
				_, _ = b.Read(buf)
				_ = p
				b.Close()
			}()
			w.do("Client", func() error {
				c, err := rpc.Client(context.Background(), a, nil)
				if err == nil {
					w.problem("Client succeeded")
					c.Close()
				}
				var ce *rpc.ClosedError
				if !errors.As(err, &ce) {
					return nil // any error will do, but say what
				}
				return err
			})
		}},
		{"server Call to the client while the client closes", func(w *invWorld) {
			c, s, _ := invPair(w, nil, nil)
			w.calls(s, invSlow, 100, 0)
			w.calls(s, invReplyAtEnd, 10, 0)
			time.Sleep(2 * time.Millisecond)
			w.closeAsync(c)
		}},
	}
	negs := []struct {
		name string
		n    rpc.Negotiation
	}{{"AcceptCompat", rpc.AcceptCompat}, {"RequireNative", rpc.RequireNative}, {"CompatOnly", rpc.CompatOnly}}
	for _, cn := range negs {
		for _, sn := range negs {
			cn, sn := cn, sn
			cases = append(cases, invCase{"negotiation client " + cn.name + " server " + sn.name, func(w *invWorld) {
				c, s, err := invPair(w, &rpc.Options{Negotiation: cn.n}, &rpc.Options{Negotiation: sn.n})
				if err != nil {
					if !errors.Is(err, rpc.ErrNativeRefused) {
						w.problem("Client: %v", err)
					}
					return
				}
				w.calls(c, echoProc, 20, 0)
				if s.Mode() == rpc.ModeNative {
					w.calls(s, echoProc, 20, 0)
				}
				w.wg.Wait()
			}})
		}
	}
	return cases
}

// Many sequences of calls, messages, replies, cancels, keepalive and
// closes from both sides, over real connections: every blocking call ends,
// with a result, a *rpc.Error, a *rpc.ClosedError or ctx's error; nothing
// stays serving or open; every handler's ctx is cancelled; no goroutine is
// left.
func TestConnectionInvariants(t *testing.T) {
	for _, tc := range invCases() {
		t.Run(tc.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			w := &invWorld{t: t}
			tc.run(w)
			for _, c := range w.conns {
				w.closeAsync(c)
			}
			done := make(chan struct{})
			go func() { w.wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				for _, c := range w.conns {
					if nc := c.NetConn(); nc != nil {
						_ = nc.Close()
					}
				}
				t.Fatalf("a blocking call did not return within 10 s")
			}
			// Close does not wait for handlers; they end once their ctx is
			// cancelled.
			for _, c := range w.conns {
				assert.Eventually(t, func() bool { return c.Stats().CallsServing == 0 }, 10*time.Second, time.Millisecond)
			}
			for i, c := range w.conns {
				st := c.Stats()
				if st.CallsServing != 0 || st.StreamsOpen != 0 {
					w.problem("conn %d after Close: CallsServing %d StreamsOpen %d", i, st.CallsServing, st.StreamsOpen)
				}
				if c.Err() == nil {
					w.problem("conn %d: Err nil after Close", i)
				}
			}
			// Under the lock: Close does not wait for message handlers
			// either, and one may still be noting its ctx (-race saw it in
			// "messages flooding while Close").
			w.mu.Lock()
			ctxs := append([]context.Context(nil), w.ctxs...)
			w.mu.Unlock()
			for _, ctx := range ctxs {
				if ctx.Err() == nil {
					w.problem("a handler's ctx is not cancelled after Close")
					break
				}
			}
			w.mu.Lock()
			problems := append([]string(nil), w.problems...)
			w.mu.Unlock()
			for _, p := range problems {
				t.Error(p)
			}
			verifyNoLeak(t, ignore)
		})
	}
}
