package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var seqProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 99}

const seqSize = 2 << 20

type seqEnds struct {
	s, r   *stream.Stream
	cc, sc *rpc.Conn
}

// seqResult is what the sequence observed.
type seqResult struct {
	wrote    int64 // bytes the sender's Writes reported as written
	closeErr error // the sender's (last) Close
	read     int64
	eof      bool
}

type streamSequence struct {
	name    string
	send    func(e seqEnds, res *seqResult)
	recv    func(e seqEnds, res *seqResult)
	mustNil bool // the sender's Close must succeed
}

func seqWrite(st *stream.Stream, n int, res *seqResult) error {
	buf := make([]byte, 64<<10)
	for n > 0 {
		k, err := st.Write(buf[:min(n, len(buf))])
		res.wrote += int64(k)
		n -= k
		if err != nil {
			return err
		}
	}
	return nil
}

func seqRead(st *stream.Stream, limit int64, res *seqResult) error {
	var src io.Reader = st
	if limit >= 0 {
		src = io.LimitReader(st, limit)
	}
	n, err := io.Copy(io.Discard, src)
	res.read += n
	if err == nil && limit < 0 {
		res.eof = true
	}
	return err
}

type failAfter struct{ n, limit int64 }

func (w *failAfter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.limit {
		return 0, errors.New("disk full")
	}
	w.n += int64(len(p))
	return len(p), nil
}

func streamSequences() []streamSequence {
	sendAll := func(e seqEnds, res *seqResult) { _ = seqWrite(e.s, seqSize, res); res.closeErr = e.s.Close() }
	readAll := func(e seqEnds, res *seqResult) { _ = seqRead(e.r, -1, res); _ = e.r.Close() }
	return []streamSequence{
		{name: "normal", send: sendAll, recv: readAll, mustNil: true},
		{name: "receiver aborts first", send: sendAll, recv: func(e seqEnds, res *seqResult) { _ = e.r.CloseWithError(errors.New("no")) }},
		{name: "receiver aborts midway", send: sendAll, recv: func(e seqEnds, res *seqResult) {
			_ = seqRead(e.r, seqSize/2, res)
			_ = e.r.CloseWithError(errors.New("no more"))
		}},
		{name: "receiver closes midway", send: sendAll, recv: func(e seqEnds, res *seqResult) {
			_ = seqRead(e.r, seqSize/2, res)
			_ = e.r.Close()
		}},
		{name: "receiver closes at once", send: sendAll, recv: func(e seqEnds, res *seqResult) { _ = e.r.Close() }},
		{name: "receiver sink fails", send: sendAll, recv: func(e seqEnds, res *seqResult) {
			n, _ := e.r.WriteTo(&failAfter{limit: seqSize / 2})
			res.read = n
			_ = e.r.Close()
		}},
		{name: "sender aborts first", send: func(e seqEnds, res *seqResult) {
			_ = e.s.CloseWithError(errors.New("src gone"))
			res.closeErr = errors.New("aborted")
		}, recv: readAll},
		{name: "sender aborts midway", send: func(e seqEnds, res *seqResult) {
			_ = seqWrite(e.s, seqSize/2, res)
			_ = e.s.CloseWithError(errors.New("src gone"))
			res.closeErr = errors.New("aborted")
		}, recv: readAll},
		{name: "sender aborts then defer Close", send: func(e seqEnds, res *seqResult) {
			_ = seqWrite(e.s, seqSize, res)
			_ = e.s.CloseWithError(errors.New("timer"))
			res.closeErr = e.s.Close()
		}, recv: func(e seqEnds, res *seqResult) { time.Sleep(50 * time.Millisecond); readAll(e, res) }},
		{name: "concurrent Close and CloseWithError", send: func(e seqEnds, res *seqResult) {
			_ = seqWrite(e.s, seqSize, res)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); res.closeErr = e.s.Close() }()
			go func() { defer wg.Done(); _ = e.s.CloseWithError(errors.New("cancel")) }()
			wg.Wait()
		}, recv: readAll},
		{name: "Finish with expiring ctx", send: func(e seqEnds, res *seqResult) {
			_ = seqWrite(e.s, 100<<10, res)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			res.closeErr = e.s.Finish(ctx)
			if err := e.s.Close(); (err == nil) != (res.closeErr == nil) {
				res.closeErr = fmt.Errorf("Finish said %v, a second Close %v", res.closeErr, err)
			}
		}, recv: func(e seqEnds, res *seqResult) { time.Sleep(150 * time.Millisecond); readAll(e, res) }},
		{name: "connection fails midway", send: func(e seqEnds, res *seqResult) {
			_ = seqWrite(e.s, seqSize/2, res)
			_ = e.cc.Close()
			_ = seqWrite(e.s, seqSize/2, res)
			res.closeErr = e.s.Close()
		}, recv: readAll},
	}
}

// Every stream sequence (normal, aborts by either side at each phase, a
// receiver error, Close racing CloseWithError, an expiring Finish, the
// connection failing mid-stream), in both modes and directions, ends with
// every blocking call returned, a sender's Close that is nil only if every
// byte was read, no stream left registered and no goroutine left.
func TestStreamSequencesEndCleanly(t *testing.T) {
	for _, mode := range []string{"native", "compat"} {
		for _, dir := range []string{"upload", "download"} {
			for _, sq := range streamSequences() {
				t.Run(mode+"/"+dir+"/"+sq.name, func(t *testing.T) {
					defer verifyNoLeak(t, goleak.IgnoreCurrent())
					runSequence(t, mode, dir, sq)
				})
			}
		}
	}
}

func runSequence(t *testing.T, mode, dir string, sq streamSequence) {
	srvSt := make(chan *stream.Stream, 1)
	mux := rpc.NewMux()
	mux.Handle(seqProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(seqDir(dir), nil)
		if err != nil {
			return nil, err
		}
		srvSt <- st
		return nil, nil
	})
	copts := &rpc.Options{}
	if mode == "compat" {
		copts.Negotiation = rpc.CompatOnly
	}
	cc, sc := pair(t, copts, &rpc.Options{Handlers: mux})
	cst, _, err := cc.OpenStream(context.Background(), seqProc, nil, seqDir(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := seqEnds{cc: cc, sc: sc}
	sst := <-srvSt
	if dir == "upload" {
		e.s, e.r = cst, sst
	} else {
		e.s, e.r = sst, cst
	}
	var sres, rres seqResult
	done := make(chan string, 2)
	go func() { sq.send(e, &sres); done <- "sender" }()
	go func() { sq.recv(e, &rres); done <- "receiver" }()
	for i := 0; i < 2; i++ {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("blocked: a side never returned")
			_ = cc.Close()
			_ = sc.Close()
			<-done
		}
	}
	allRead := rres.read == sres.wrote && (rres.eof || sres.wrote == 0)
	if sres.closeErr == nil && !allRead {
		t.Errorf("sender's Close nil, but the receiver read %d of %d (eof %v)", rres.read, sres.wrote, rres.eof)
	}
	if sq.mustNil && sres.closeErr != nil {
		t.Errorf("sender's Close: %v", sres.closeErr)
	}
	if sres.closeErr != nil && allRead && sq.name == "normal" {
		t.Errorf("sender's Close %v though every byte was read", sres.closeErr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (cc.Stats().StreamsOpen != 0 || sc.Stats().StreamsOpen != 0) {
		time.Sleep(5 * time.Millisecond)
	}
	if a, b := cc.Stats().StreamsOpen, sc.Stats().StreamsOpen; a != 0 || b != 0 {
		t.Errorf("StreamsOpen client %d server %d", a, b)
	}
	t.Logf("wrote %d read %d eof %v close %v", sres.wrote, rres.read, rres.eof, sres.closeErr)
	_ = cc.Close()
	_ = sc.Close()
}

// verifyUploadProc's handler returns without Close once the client
// aborted: the server's side is released all the same, buffers and all.
func TestPeerAbortReleasesTheStreamWithoutALocalClose(t *testing.T) {
	cc, sc := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
	st, _, err := cc.OpenStream(context.Background(), verifyUploadProc, digest(1<<20, 1), stream.Upload, nil)
	require.NoError(t, err)
	_, err = st.Write(make([]byte, 100<<10))
	require.NoError(t, err)
	require.NoError(t, st.CloseWithError(errors.New("client gives up")))
	require.Eventually(t, func() bool { return sc.Stats().StreamsOpen == 0 }, 10*time.Second, time.Millisecond,
		"the server keeps a stream its peer aborted and nobody will close")
	assert.Zero(t, cc.Stats().StreamsOpen)
}

func seqDir(dir string) stream.Direction {
	if dir == "upload" {
		return stream.Upload
	}
	return stream.Download
}
