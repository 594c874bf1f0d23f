package main

import (
	"context"
	"encoding/binary"
	"io"
	"sync"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
)

// yamux and smux over TLS 1.3, with their default configurations (smux in
// protocol version 2, which has per-stream windows): what a user would pick
// to multiplex streams over one connection. Each bulk stream starts with a
// 4-byte id so the server knows its counter; the ping is 64 bytes echoed on
// a second stream opened once.

const echoStreamID = 0xffffffff

func muxCases() []benchCase {
	return []benchCase{
		{name: "yamux", muxed: true, connect: func(ctx context.Context, e *env) (session, error) {
			cc, sc, err := e.tlsPair(ctx)
			if err != nil {
				return nil, err
			}
			cfg := yamux.DefaultConfig()
			cfg.LogOutput = io.Discard
			cli, err := yamux.Client(cc, cfg)
			if err != nil {
				return nil, err
			}
			srv, err := yamux.Server(sc, cfg)
			if err != nil {
				cli.Close()
				return nil, err
			}
			return newMuxSession(muxOps{
				open:   func() (io.ReadWriteCloser, error) { return cli.OpenStream() },
				accept: func() (io.ReadWriteCloser, error) { return srv.AcceptStream() },
				// yamux's Close is a half close: the peer reads to EOF.
				closeWrite: func(s io.ReadWriteCloser) error { return s.Close() },
				close:      func() { cli.Close(); srv.Close() },
			})
		}},
		{name: "smux", muxed: true, connect: func(ctx context.Context, e *env) (session, error) {
			cc, sc, err := e.tlsPair(ctx)
			if err != nil {
				return nil, err
			}
			cfg := smux.DefaultConfig()
			cfg.Version = 2
			cli, err := smux.Client(cc, cfg)
			if err != nil {
				return nil, err
			}
			srv, err := smux.Server(sc, cfg)
			if err != nil {
				cli.Close()
				return nil, err
			}
			return newMuxSession(muxOps{
				open:       func() (io.ReadWriteCloser, error) { return cli.OpenStream() },
				accept:     func() (io.ReadWriteCloser, error) { return srv.AcceptStream() },
				closeWrite: func(s io.ReadWriteCloser) error { return s.(*smux.Stream).CloseWrite() },
				close:      func() { cli.Close(); srv.Close() },
			})
		}},
	}
}

type muxOps struct {
	open       func() (io.ReadWriteCloser, error)
	accept     func() (io.ReadWriteCloser, error)
	closeWrite func(io.ReadWriteCloser) error
	close      func()
}

type muxSession struct {
	ops  muxOps
	echo io.ReadWriteCloser
	pmu  sync.Mutex

	mu       sync.Mutex
	counters map[uint32]*counter
	accepted sync.WaitGroup
}

func newMuxSession(ops muxOps) (*muxSession, error) {
	s := &muxSession{ops: ops, counters: map[uint32]*counter{}}
	go s.acceptLoop()
	echo, err := ops.open()
	if err == nil {
		err = writeID(echo, echoStreamID)
	}
	if err != nil {
		ops.close()
		return nil, err
	}
	s.echo = echo
	return s, nil
}

func writeID(w io.Writer, id uint32) error {
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, id))
	return err
}

func (s *muxSession) acceptLoop() {
	for {
		st, err := s.ops.accept()
		if err != nil {
			return
		}
		go s.serve(st)
	}
}

// serve is the server end of one stream: echo, or drain into its counter.
func (s *muxSession) serve(st io.ReadWriteCloser) {
	defer st.Close()
	var idb [4]byte
	if _, err := io.ReadFull(st, idb[:]); err != nil {
		return
	}
	id := binary.BigEndian.Uint32(idb[:])
	if id == echoStreamID {
		_, _ = io.Copy(st, st)
		return
	}
	s.mu.Lock()
	rc := s.counters[id]
	s.mu.Unlock()
	if rc == nil {
		return
	}
	rc.finish(drain(st, rc))
}

func (s *muxSession) open(id int, rc *counter) (sender, error) {
	s.mu.Lock()
	s.counters[uint32(id)] = rc
	s.mu.Unlock()
	st, err := s.ops.open()
	if err != nil {
		return nil, err
	}
	if err := writeID(st, uint32(id)); err != nil {
		return nil, err
	}
	return &muxSender{st: st, ops: &s.ops}, nil
}

func (s *muxSession) ping(ctx context.Context) error {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	var b [64]byte
	if _, err := s.echo.Write(b[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(s.echo, b[:])
	return err
}

func (s *muxSession) close() { s.ops.close() }

type muxSender struct {
	st  io.ReadWriteCloser
	ops *muxOps
}

func (w *muxSender) send(c chunk) error {
	_, err := w.st.Write(c.payload())
	return err
}

func (w *muxSender) close() error { return w.ops.closeWrite(w.st) }
