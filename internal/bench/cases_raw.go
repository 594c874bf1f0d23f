package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// The raw cases are the ceilings: one stream per connection, in a minimal
// framing (8-byte header: 1 byte type, 3 zero bytes, 4 bytes length) so a
// ping can share the connection, as the PERF_NOTES prototypes did. A data
// frame is 256 KiB written with one Write (header in the chunk's headroom).
// The server answers a ping with a pong from its read loop, on the
// otherwise idle server-to-client direction.

const (
	rawData byte = iota + 1
	rawPing
	rawPong
	rawEnd
)

const rawPingSize = 64

func rawCases() []benchCase {
	return []benchCase{
		{name: "raw-tcp", connect: func(ctx context.Context, e *env) (session, error) {
			c, s, err := e.tcpPair(ctx)
			if err != nil {
				return nil, err
			}
			return newRawSession(c, s), nil
		}},
		{name: "raw-tls", connect: func(ctx context.Context, e *env) (session, error) {
			c, s, err := e.tlsPair(ctx)
			if err != nil {
				return nil, err
			}
			return newRawSession(c, s), nil
		}},
	}
}

type rawSession struct {
	client, server net.Conn
	wmu            sync.Mutex // client writes: data frames and pings
	pong           chan error
	opened         bool
	closeOnce      sync.Once
}

func newRawSession(client, server net.Conn) *rawSession {
	s := &rawSession{client: client, server: server, pong: make(chan error, 1)}
	go s.readPongs()
	return s
}

func putRawHeader(b []byte, typ byte, n int) {
	b[0], b[1], b[2], b[3] = typ, 0, 0, 0
	binary.BigEndian.PutUint32(b[4:8], uint32(n))
}

func (s *rawSession) open(id int, rc *counter) (sender, error) {
	if s.opened {
		return nil, errors.New("one stream per raw connection")
	}
	s.opened = true
	go func() { rc.finish(s.serve(rc)) }()
	return &rawSender{s: s}, nil
}

// serve is the server's read loop: count data, answer pings.
func (s *rawSession) serve(rc *counter) error {
	var hdr [8]byte
	buf := make([]byte, chunkPayload)
	pong := make([]byte, headroom+rawPingSize)
	putRawHeader(pong, rawPong, rawPingSize)
	for {
		if _, err := io.ReadFull(s.server, hdr[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint32(hdr[4:]))
		if n > len(buf) {
			return fmt.Errorf("raw frame of %d bytes", n)
		}
		if _, err := io.ReadFull(s.server, buf[:n]); err != nil {
			return err
		}
		switch hdr[0] {
		case rawData:
			rc.add(n)
		case rawPing:
			if _, err := s.server.Write(pong); err != nil {
				return err
			}
		case rawEnd:
			return nil
		default:
			return fmt.Errorf("raw frame type %d", hdr[0])
		}
	}
}

func (s *rawSession) readPongs() {
	var b [headroom + rawPingSize]byte
	for {
		_, err := io.ReadFull(s.client, b[:])
		if err == nil && b[0] != rawPong {
			err = fmt.Errorf("raw frame type %d from server", b[0])
		}
		if err != nil {
			select {
			case s.pong <- err:
			default:
			}
			return
		}
		s.pong <- nil
	}
}

func (s *rawSession) ping(ctx context.Context) error {
	var b [headroom + rawPingSize]byte
	putRawHeader(b[:], rawPing, rawPingSize)
	s.wmu.Lock()
	_, err := s.client.Write(b[:])
	s.wmu.Unlock()
	if err != nil {
		return err
	}
	select {
	case err := <-s.pong:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *rawSession) close() {
	s.closeOnce.Do(func() {
		s.client.Close()
		s.server.Close()
	})
}

type rawSender struct{ s *rawSession }

func (r *rawSender) send(c chunk) error {
	putRawHeader(c.buf, rawData, chunkPayload)
	r.s.wmu.Lock()
	_, err := r.s.client.Write(c.buf)
	r.s.wmu.Unlock()
	return err
}

func (r *rawSender) close() error {
	var b [headroom]byte
	putRawHeader(b[:], rawEnd, 0)
	r.s.wmu.Lock()
	defer r.s.wmu.Unlock()
	_, err := r.s.client.Write(b[:])
	return err
}
