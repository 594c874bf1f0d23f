package rpc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// The hostile-peer suite: each attack runs against a Serve with the limits
// below while a legitimate client on its own connection makes calls and
// downloads 64 MiB (sha256 checked). For each: the attack's connections are
// closed or its calls fail with a clear error, the process's live heap
// stays within the server's memory budget plus the legitimate stream's
// buffers, goroutines stay bounded, and nothing is left running after.

const (
	hConnMemory   = 6 << 20
	hServerMemory = 48 << 20
	hMaxConns     = 100
	hMaxAnon      = 20
	// hSlack is what the heap may hold beyond the server's budget: the
	// legitimate download's windows and buffers on both ends, the attackers'
	// own buffers, and the test's bookkeeping.
	hSlack = 24 << 20
)

func hostileOpts() *rpc.Options {
	mux := streamMux(nil)
	mux.Handle(signInProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		req.Conn().Authenticate()
		return nil, nil
	})
	mux.HandleMessage(slowMsgProc, func(ctx context.Context, _ *rpc.Message) { <-ctx.Done() })
	return &rpc.Options{
		Handlers:           mux,
		Auth:               &rpc.AuthGate{Procedures: []rpc.Procedure{signInProc}},
		ConnectionMemory:   hConnMemory,
		ServerMemory:       hServerMemory,
		MaxConnections:     hMaxConns,
		MaxUnauthenticated: hMaxAnon,
		AuthTimeout:        2 * time.Second,
		MaxUnauthMessage:   64 << 10,
		MessageTimeout:     2 * time.Second, // generous: a loaded -race run may starve our own read loop
		MinMessageRate:     16 << 10,
		KeepaliveInterval:  500 * time.Millisecond,
		KeepaliveCount:     3,
		MaxConcurrentCalls: 32,
	}
}

// hostileEnv is the server under attack.
type hostileEnv struct {
	addr string
	mu   sync.Mutex
	errs []error                // why each connection the server started closed (not the conns: their buffers would stay live)
	open map[*rpc.Conn]struct{} // the server's connections not yet seen Done (under mu)
	peak atomic.Int64
	stop func()
}

func startHostile(t *testing.T) *hostileEnv {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e := &hostileEnv{addr: ln.Addr().String(), open: map[*rpc.Conn]struct{}{}}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- rpc.Serve(ctx, ln, hostileOpts(), func(c *rpc.Conn) {
			// Counted exactly: Serve frees a connection's place only after
			// its Done is closed, so every connection whose place a new one
			// may have taken is seen Done here (a goroutine decrementing a
			// counter on Done lags behind under load and overcounts).
			e.mu.Lock()
			for o := range e.open {
				select {
				case <-o.Done():
					delete(e.open, o)
				default:
				}
			}
			e.open[c] = struct{}{}
			n := int64(len(e.open))
			e.mu.Unlock()
			for p := e.peak.Load(); n > p && !e.peak.CompareAndSwap(p, n); p = e.peak.Load() {
			}
			go func() {
				<-c.Done()
				e.mu.Lock()
				delete(e.open, c)
				e.errs = append(e.errs, c.Err())
				e.mu.Unlock()
			}()
		})
	}()
	e.stop = func() {
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not end")
		}
	}
	return e
}

// closedWith counts the server's connections that closed with an error
// matching is.
func (e *hostileEnv) closedWith(is func(error) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, err := range e.errs {
		if is(err) {
			n++
		}
	}
	return n
}

func errIs(target error, text string) func(error) bool {
	return func(err error) bool {
		return (target == nil || errors.Is(err, target)) && strings.Contains(err.Error(), text)
	}
}

// legit is the well-behaved client: calls every few ms and one 64 MiB
// download, verified.
type legit struct {
	c      *rpc.Conn
	calls  atomic.Int64
	callEr chan error
	stream chan error
	stop   chan struct{}
}

func dialLegit(t *testing.T, addr string) *legit {
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c, err := rpc.Client(context.Background(), nc, &rpc.Options{StreamWindow: 1 << 20, MaxStreamWindow: 4 << 20, StreamBuffer: 4 << 20})
	require.NoError(t, err)
	_, err = c.Call(context.Background(), signInProc, nil)
	require.NoError(t, err)
	return &legit{c: c, callEr: make(chan error, 1), stream: make(chan error, 1), stop: make(chan struct{})}
}

func (l *legit) start() {
	go func() {
		msg := bytes.Repeat([]byte("legit"), 13)
		for !stopped(l.stop) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			got, err := l.c.Call(ctx, echoProc, msg)
			cancel()
			if err == nil && !bytes.Equal(got, msg) {
				err = errors.New("echo mangled")
			}
			if err != nil {
				l.callEr <- err
				return
			}
			l.calls.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
		l.callEr <- nil
	}()
	go func() { l.stream <- l.download(64<<20, 7) }()
}

func (l *legit) download(size int64, seed int) error {
	st, _, err := l.c.OpenStream(context.Background(), sendProc, sendArgs(size, seed), stream.Download, nil)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, st)
	if err != nil {
		return err
	}
	if n != size || !bytes.Equal(h.Sum(nil), digest(size, seed)) {
		return errors.New("the download arrived corrupted")
	}
	return st.Close()
}

// attack is one hostile behaviour. run attacks until stop is closed;
// done says the attack has shown its effect (the suite keeps attacking
// until it has, after the legitimate download ended); check asserts the
// outcome.
type attack struct {
	name  string
	run   func(addr string, stop <-chan struct{}, tl *tally)
	done  func(e *hostileEnv, tl *tally) bool
	check func(t *testing.T, e *hostileEnv, tl *tally)
}

func TestHostilePeers(t *testing.T) {
	for _, a := range hostileAttacks() {
		t.Run(a.name, func(t *testing.T) {
			runAttack(t, a)
		})
	}
}

func runAttack(t *testing.T, a attack) {
	e := startHostile(t)
	l := dialLegit(t, e.addr)
	base, g0 := liveHeap(), runtime.NumGoroutine()

	stop := make(chan struct{})
	var tl tally
	attacking := make(chan struct{})
	go func() { a.run(e.addr, stop, &tl); close(attacking) }()
	time.Sleep(200 * time.Millisecond) // under way before the legitimate work starts
	l.start()

	var peakHeap int64
	peakG := 0
	sample := func() {
		h := liveHeap() - base
		if h > peakHeap && os.Getenv("HOSTILE_PROFILE") != "" {
			f, _ := os.Create(os.Getenv("HOSTILE_PROFILE"))
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
		peakHeap = max(peakHeap, h)
		peakG = max(peakG, runtime.NumGoroutine()-g0)
	}
	var streamErr error
	deadline := time.After(120 * time.Second)
wait:
	for {
		select {
		case streamErr = <-l.stream:
			break wait
		case <-deadline:
			t.Fatal("the legitimate download did not finish under attack")
		case <-time.After(250 * time.Millisecond):
			sample()
		}
	}
	for end := time.Now().Add(60 * time.Second); !a.done(e, &tl) && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		sample()
	}
	sample()
	close(l.stop)
	callErr := <-l.callEr
	close(stop)
	select {
	case <-attacking:
	case <-time.After(60 * time.Second):
		t.Fatal("the attack did not stop")
	}

	t.Logf("live heap +%.1f MiB at peak (budget %d MiB + %d MiB slack), goroutines +%d at peak, %d server connections at once at peak; legit: %d calls; attack: %d attempts, %d closed by the server, %d refused at once",
		float64(peakHeap)/(1<<20), hServerMemory>>20, hSlack>>20, peakG, e.peak.Load(), l.calls.Load(), tl.attempts.Load(), tl.closed.Load(), tl.refused.Load())
	assert.NoError(t, streamErr, "the legitimate 64 MiB download")
	assert.NoError(t, callErr, "the legitimate calls")
	assert.Positive(t, l.calls.Load(), "legitimate calls made during the attack")
	assert.Less(t, peakHeap, int64(hServerMemory+hSlack), "live heap under attack")
	assert.Less(t, peakG, hMaxConns*8+200, "goroutines under attack")
	assert.LessOrEqual(t, e.peak.Load(), int64(hMaxConns), "server connections at once")
	assert.True(t, a.done(e, &tl), "the attack's effect was never seen")
	assert.Empty(t, tl.errs, "the attack itself failed")
	a.check(t, e, &tl)
	if t.Failed() {
		e.mu.Lock()
		for i, err := range e.errs {
			if i < 20 {
				t.Log("server closed a connection:", err)
			}
		}
		e.mu.Unlock()
	}

	_ = l.c.Close()
	e.stop()
	verifyNoLeak(t)
}
