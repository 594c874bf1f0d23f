package rpc_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// The harness of the direction sequences: a client and a server over TCP
// loopback, one stream opened on a call with a declared direction, and the
// checks every sequence ends with (no stream registered, the connection
// still answers calls unless the sequence closed it, no goroutine left).

var dirProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 120}

var dirModes = []string{"native", "compat"}

var dirDirs = []stream.Direction{stream.Upload, stream.Download, stream.Duplex}

// dirEnds is one stream seen from both ends.
type dirEnds struct {
	t      *testing.T
	mode   string
	dir    stream.Direction
	cc, sc *rpc.Conn
	c, s   *stream.Stream // the client's end, the server's end
	// connClosed: the sequence closes the connection on purpose, so the
	// final call is not expected to work.
	connClosed bool
}

// w is the end that sends on the primary direction (the client's on an
// upload or a duplex stream), r the end that receives it.
func (e *dirEnds) w() *stream.Stream {
	if e.dir == stream.Download {
		return e.s
	}
	return e.c
}

func (e *dirEnds) r() *stream.Stream {
	if e.dir == stream.Download {
		return e.c
	}
	return e.s
}

// wConn is the connection of w.
func (e *dirEnds) wConn() *rpc.Conn {
	if e.dir == stream.Download {
		return e.sc
	}
	return e.cc
}

func (e *dirEnds) native() bool { return e.mode == "native" }

type dirSetup struct {
	sopts          *stream.Options
	client, server rpc.Options
	// handler, if set, runs in the call's handler once the server's end
	// is open; its result is the handler's.
	handler func(ctx context.Context, req *rpc.Request, st *stream.Stream) ([]byte, error)
}

// smallStreams keeps the windows and buffers small, so that a writer
// blocks on flow control after a few hundred KiB.
func smallStreams(o *rpc.Options) {
	o.StreamWindow = 64 << 10
	o.StreamBuffer = 256 << 10
	o.MaxStreamWindow = 64 << 10
	o.CompatStreamBuffer = 256 << 10
}

func dirConns(t *testing.T, mode string, su *dirSetup, srvSt chan<- *stream.Stream, dir stream.Direction) (*rpc.Conn, *rpc.Conn) {
	t.Helper()
	mux := echoMux()
	mux.Handle(dirProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(dir, su.sopts)
		if err != nil {
			return nil, err
		}
		srvSt <- st
		if su.handler != nil {
			return su.handler(ctx, req, st)
		}
		return nil, nil
	})
	copts, sopts := su.client, su.server
	smallStreams(&copts)
	smallStreams(&sopts)
	sopts.Handlers = mux
	if mode == "compat" {
		copts.Negotiation = rpc.CompatOnly
	}
	a, b := tcpPair(t)
	sc := rpc.Server(b, &sopts)
	cc, err := rpc.Client(context.Background(), a, &copts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close(); _ = sc.Close() })
	return cc, sc
}

// openDir opens one stream going dir on a fresh connection pair.
func openDir(t *testing.T, mode string, dir stream.Direction, su *dirSetup) *dirEnds {
	t.Helper()
	if su == nil {
		su = &dirSetup{}
	}
	srvSt := make(chan *stream.Stream, 4)
	cc, sc := dirConns(t, mode, su, srvSt, dir)
	c, _, err := cc.OpenStream(context.Background(), dirProc, nil, dir, su.sopts)
	require.NoError(t, err)
	e := &dirEnds{t: t, mode: mode, dir: dir, cc: cc, sc: sc, c: c}
	select {
	case e.s = <-srvSt:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never opened its end")
	}
	return e
}

// end checks what every sequence must leave: no stream registered on
// either side, and (unless the sequence closed the connection) calls
// still answered both ways.
func (e *dirEnds) end() {
	t := e.t
	t.Helper()
	ok := assert.Eventually(t, func() bool {
		return e.cc.Stats().StreamsOpen == 0 && e.sc.Stats().StreamsOpen == 0
	}, 10*time.Second, 5*time.Millisecond)
	if !ok {
		t.Errorf("StreamsOpen client %d server %d", e.cc.Stats().StreamsOpen, e.sc.Stats().StreamsOpen)
	}
	if !e.connClosed {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := e.cc.Call(ctx, echoProc, []byte("still here"))
		if assert.NoError(t, err, "a stream-level failure leaves the connection usable") {
			assert.Equal(t, "still here", string(got))
		}
	}
	_ = e.cc.Close()
	_ = e.sc.Close()
}

// runDir runs f for every mode and direction accepted by dirs (all if nil),
// with the leak check.
func runDir(t *testing.T, dirs []stream.Direction, f func(t *testing.T, mode string, dir stream.Direction)) {
	if dirs == nil {
		dirs = dirDirs
	}
	for _, mode := range dirModes {
		for _, dir := range dirs {
			t.Run(mode+"/"+dir.String(), func(t *testing.T) {
				defer verifyNoLeak(t, goleak.IgnoreCurrent())
				f(t, mode, dir)
			})
		}
	}
}

// dirData is n bytes of a pattern that differs with seed.
func dirData(n, seed int) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(source(int64(n), seed), b)
	return b
}

// writeAll writes data in chunks and returns how many bytes Write reported.
func writeAll(st *stream.Stream, data []byte) (int, error) {
	n := 0
	for n < len(data) {
		k, err := st.Write(data[n:min(len(data), n+32<<10)])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readAllOf reads to the end or the first error.
func readAllOf(st *stream.Stream) ([]byte, error) {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, st)
	return buf.Bytes(), err
}

// async runs f on a goroutine; the returned channel yields its error.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// wait returns what ch yields, failing the test after 10 s.
func wait(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never returned", what)
		return nil
	}
}

// blockWriter writes until a Write has been blocked for 100 ms (flow
// control: the reader reads nothing) and returns a channel yielding the
// blocked Write's error and the total reported written.
func blockWriter(t *testing.T, st *stream.Stream, data []byte) (<-chan error, *int) {
	t.Helper()
	var wrote int
	progress := make(chan struct{}, 1)
	ch := make(chan error, 1)
	go func() {
		for {
			k, err := st.Write(data[wrote%len(data) : wrote%len(data)+min(16<<10, len(data)-wrote%len(data))])
			wrote += k
			if err != nil {
				ch <- err
				return
			}
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	for {
		select {
		case <-progress:
		case <-time.After(150 * time.Millisecond):
			return ch, &wrote
		case err := <-ch:
			t.Fatalf("the writer failed before it blocked: %v", err)
		}
	}
}
