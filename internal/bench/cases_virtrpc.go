package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// The virtrpc cases run the library over TLS 1.3:
//   - virtrpc: one stream (native mode: credit flow control, 64 KiB frames);
//   - virtrpc-compat: the same stream in libvirt's compat protocol (no credit);
//   - sync-64k: libvirt's first design, one call and its empty reply per
//     64 KiB frame (65508 bytes of payload), one call outstanding per stream.
// The ping is a call with a 64-byte payload echoed by its handler.

const benchProg = 0x20008086

var (
	echoProc   = rpc.Procedure{Prog: benchProg, Vers: 1, Proc: 1}
	uploadProc = rpc.Procedure{Prog: benchProg, Vers: 1, Proc: 2}
	endProc    = rpc.Procedure{Prog: benchProg, Vers: 1, Proc: 3}
)

// chunkProc is sync-64k's procedure for stream id (one per stream, so the
// payload is the caller's slice with nothing prepended).
func chunkProc(id int) rpc.Procedure {
	return rpc.Procedure{Prog: benchProg, Vers: 1, Proc: int32(1000 + id)}
}

const maxStreams = 64

// syncChunk is sync-64k's payload per call: a 64 KiB frame.
const syncChunk = frame.AlignedStreamPayload

func virtrpcCases() []benchCase {
	return []benchCase{
		{name: "sync-64k", muxed: true, connect: func(ctx context.Context, e *env) (session, error) {
			return newVirtrpcSession(ctx, e, rpc.AcceptCompat, true)
		}},
		{name: "virtrpc", muxed: true, connect: func(ctx context.Context, e *env) (session, error) {
			return newVirtrpcSession(ctx, e, rpc.AcceptCompat, false)
		}},
		{name: "virtrpc-compat", muxed: true, connect: func(ctx context.Context, e *env) (session, error) {
			return newVirtrpcSession(ctx, e, rpc.CompatOnly, false)
		}},
	}
}

type virtrpcSession struct {
	srv, cli *rpc.Conn
	calls    bool // sync-64k

	mu       sync.Mutex
	counters map[uint32]*counter
}

func newVirtrpcSession(ctx context.Context, e *env, neg rpc.Negotiation, calls bool) (*virtrpcSession, error) {
	cc, sc, err := e.tlsPair(ctx)
	if err != nil {
		return nil, err
	}
	s := &virtrpcSession{calls: calls, counters: map[uint32]*counter{}}
	mux := rpc.NewMux()
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return req.Payload, nil })
	mux.Handle(uploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		rc, err := s.counter(req.Payload)
		if err != nil {
			return nil, err
		}
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			err := drain(st, rc)
			if cerr := st.Close(); err == nil {
				err = cerr
			}
			rc.finish(err)
		}()
		return nil, nil
	})
	for id := range maxStreams {
		idb := binary.BigEndian.AppendUint32(nil, uint32(id))
		mux.Handle(chunkProc(id), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
			rc, err := s.counter(idb)
			if err != nil {
				return nil, err
			}
			rc.add(len(req.Payload))
			return nil, nil
		})
	}
	mux.Handle(endProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		rc, err := s.counter(req.Payload)
		if err != nil {
			return nil, err
		}
		rc.finish(nil)
		return nil, nil
	})
	opts := &rpc.Options{Negotiation: neg}
	s.srv = rpc.Server(sc, &rpc.Options{Handlers: mux, Negotiation: neg})
	s.cli, err = rpc.Client(ctx, cc, opts)
	if err != nil {
		s.srv.Close()
		return nil, err
	}
	want := rpc.ModeNative
	if neg == rpc.CompatOnly {
		want = rpc.ModeCompat
	}
	if s.cli.Mode() != want {
		s.close()
		return nil, fmt.Errorf("connection runs in %s mode, want %s", s.cli.Mode(), want)
	}
	return s, nil
}

func (s *virtrpcSession) counter(idb []byte) (*counter, error) {
	if len(idb) < 4 {
		return nil, errors.New("missing stream id")
	}
	id := binary.BigEndian.Uint32(idb)
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.counters[id]
	if rc == nil {
		return nil, fmt.Errorf("unknown stream id %d", id)
	}
	return rc, nil
}

func (s *virtrpcSession) open(id int, rc *counter) (sender, error) {
	s.mu.Lock()
	s.counters[uint32(id)] = rc
	s.mu.Unlock()
	idb := binary.BigEndian.AppendUint32(nil, uint32(id))
	if s.calls {
		if id >= maxStreams {
			return nil, fmt.Errorf("at most %d sync-64k streams", maxStreams)
		}
		return &callSender{s: s, id: idb, proc: chunkProc(id)}, nil
	}
	st, _, err := s.cli.OpenStream(context.Background(), uploadProc, idb, stream.Upload, nil)
	if err != nil {
		return nil, err
	}
	return &streamSender{st: st}, nil
}

func (s *virtrpcSession) ping(ctx context.Context) error {
	var b [64]byte
	out, err := s.cli.Call(ctx, echoProc, b[:])
	if err == nil && len(out) != len(b) {
		err = fmt.Errorf("echo of %d bytes", len(out))
	}
	return err
}

func (s *virtrpcSession) close() {
	s.cli.Close()
	s.srv.Close()
}

type streamSender struct{ st *stream.Stream }

func (w *streamSender) send(c chunk) error {
	_, err := w.st.Write(c.payload())
	return err
}

func (w *streamSender) close() error { return w.st.Close() }

// callSender sends a chunk as calls of syncChunk bytes, each waiting for
// its reply.
type callSender struct {
	s    *virtrpcSession
	id   []byte
	proc rpc.Procedure
}

func (w *callSender) send(c chunk) error {
	p := c.payload()
	for len(p) > 0 {
		n := min(len(p), syncChunk)
		if _, err := w.s.cli.Call(context.Background(), w.proc, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (w *callSender) close() error {
	_, err := w.s.cli.Call(context.Background(), endProc, w.id)
	return err
}
