package streamcore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// fakeLink writes every scheduled frame into a buffer at once, as an idle
// connection would, and records credit.
type fakeLink struct {
	mu       sync.Mutex
	out      bytes.Buffer
	credit   uint64
	released bool
}

func (l *fakeLink) Schedule(s *Stream, _ bool) {
	for {
		f, more := s.PopFrame()
		l.mu.Lock()
		l.out.Write(f.Bytes())
		l.mu.Unlock()
		f.Done()
		if !more {
			return
		}
	}
}
func (l *fakeLink) SendFrame(msg []byte) { l.mu.Lock(); l.out.Write(msg); l.mu.Unlock() }
func (l *fakeLink) SendCredit(_ uint32, n uint64, _ bool) {
	l.mu.Lock()
	l.credit += n
	l.mu.Unlock()
}
func (l *fakeLink) Release(*Stream) { l.mu.Lock(); l.released = true; l.mu.Unlock() }

// frames parses everything written so far.
func (l *fakeLink) frames(t *testing.T) []frame.Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	fr := frame.NewReader(bytes.NewReader(l.out.Bytes()), nil)
	var hs []frame.Header
	for {
		h, _, err := fr.Next()
		if err == io.EOF {
			return hs
		}
		require.NoError(t, err)
		hs = append(hs, h)
	}
}

var hdr = frame.Header{Prog: 7, Vers: 1, Proc: 3, Serial: 9}

// verdict is a native receiver's answer to a finish: it consumed n bytes.
func verdict(n uint64) []byte {
	b := make([]byte, frame.VerdictPayloadSize)
	frame.PutVerdict(b, n)
	return b
}

// feed hands the stream one message as the read loop would.
func feed(t *testing.T, s *Stream, typ frame.Type, status frame.Status, payload []byte) error {
	h := hdr
	h.Type, h.Status = typ, status
	fr := frame.NewReader(bytes.NewReader(frame.Append(nil, h, payload)), nil)
	got, _, err := fr.Next()
	require.NoError(t, err)
	return s.HandleFrame(got, fr)
}

func TestNativeSenderWaitsForCredit(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: Native, ChunkSize: 64 << 10, SendCredit: 128 << 10, RecvWindow: 1 << 20})
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(make([]byte, 200<<10))
		done <- err
	}()
	require.Eventually(t, func() bool { return s.BytesSent() == 128<<10 }, testTimeout, tick)
	select {
	case err := <-done:
		t.Fatalf("Write returned without credit: %v", err)
	default:
	}
	require.NoError(t, s.AddCredit(72<<10))
	require.NoError(t, <-done)
	assert.EqualValues(t, 200<<10, s.BytesSent())

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { hs := l.frames(t); return len(hs) > 0 && hs[len(hs)-1].Status == frame.StatusOK }, testTimeout, tick)
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(200<<10))) // the receiver's verdict
	require.NoError(t, <-closed)
	assert.True(t, l.released)
}

func TestReceiverRejectsDataPastCredit(t *testing.T) {
	s := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 64 << 10, MaxWindow: 64 << 10, BufferLimit: 64 << 10})
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, make([]byte, 64<<10)))
	// Receiving the first window granted one more; the peer sends past it.
	err := feed(t, s, frame.TypeStream, frame.StatusContinue, make([]byte, 64<<10+1))
	require.ErrorContains(t, err, "past its credit")
}

func TestReceiverGrantsAsItReads(t *testing.T) {
	l := &fakeLink{}
	const window = 64 << 10
	s := New(l, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: window, MaxWindow: window, BufferLimit: 4 * window})
	// Data arriving grants credit up to the buffer limit, without a reader.
	for range 4 {
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, make([]byte, window)))
	}
	assert.EqualValues(t, 3*window, l.credit, "in flight within the window, buffered within the limit")
	require.ErrorContains(t, feed(t, s, frame.TypeStream, frame.StatusContinue, make([]byte, 1)), "past its credit")
}

func TestHolesMergeAndReadAsZeros(t *testing.T) {
	s := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, Sparse: true, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
	hole := func(n int64) []byte { b := make([]byte, 12); frame.PutHole(b, n, 0); return b }
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("ab")))
	require.NoError(t, feed(t, s, frame.TypeStreamHole, frame.StatusContinue, hole(3)))
	require.NoError(t, feed(t, s, frame.TypeStreamHole, frame.StatusContinue, hole(2)))
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("cd")))
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil))
	s.mu.Lock()
	assert.Len(t, s.inq, 3, "adjacent holes merge")
	s.mu.Unlock()
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, []byte("ab\x00\x00\x00\x00\x00cd"), got)

	notSparse := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20})
	require.ErrorIs(t, feed(t, notSparse, frame.TypeStreamHole, frame.StatusContinue, hole(3)), ErrNotSparse)
}

func TestCompatServerSenderEndsWithEmptyContinue(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: CompatServer})
	_, err := s.Write([]byte("data"))
	require.NoError(t, err)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return len(l.frames(t)) == 2 }, testTimeout, tick)
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil)) // the client's finish
	require.NoError(t, <-closed)
	hs := l.frames(t)
	want := []frame.Status{frame.StatusContinue, frame.StatusContinue, frame.StatusOK}
	require.Len(t, hs, len(want))
	for i, h := range hs {
		assert.Equal(t, want[i], h.Status, "frame %d", i)
	}
}

func TestReceiverCloseBeforeTheEndAborts(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("partial")))
	require.ErrorIs(t, s.Close(), ErrReceiverClosed)
	hs := l.frames(t)
	require.Len(t, hs, 1)
	assert.Equal(t, frame.StatusError, hs[0].Status)
	_, err := s.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrReceiverClosed)
}

func TestPeerErrorReachesReaderAndWriter(t *testing.T) {
	s := New(&fakeLink{}, Config{Header: hdr, Send: true, Recv: true, Role: Native, SendCredit: 1 << 20, RecvWindow: 1 << 20})
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusError, frame.EncodeError(frame.NewError(38, "no space left"))))
	_, err := s.Read(make([]byte, 1))
	var fe *frame.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "no space left", fe.Text())
	_, err = s.Write([]byte("x"))
	require.ErrorAs(t, err, &fe)
	require.ErrorAs(t, s.Close(), &fe)

	empty := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: CompatServer})
	require.NoError(t, feed(t, empty, frame.TypeStream, frame.StatusError, nil))
	_, err = empty.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrAborted)
}

func TestFinishContextAborts(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: Native, SendCredit: 1 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Finish(ctx)
	require.ErrorIs(t, err, context.Canceled)
	hs := l.frames(t)
	require.NotEmpty(t, hs)
	assert.Equal(t, frame.StatusError, hs[len(hs)-1].Status, "the peer is told")
	require.True(t, errors.Is(s.CloseWithError(nil), nil))
}

func TestCloseWriteFinishesOneDirection(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Recv: true, Role: Native, SendCredit: 1 << 20, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
	_, err := s.Write([]byte("out"))
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite())
	require.NoError(t, s.CloseWrite(), "twice is fine")
	_, err = s.Write([]byte("more"))
	require.ErrorIs(t, err, ErrClosed, "our direction is finished")
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("in")))
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil)) // the peer's finish
	got, err := io.ReadAll(s)
	require.NoError(t, err, "reading goes on after CloseWrite")
	assert.Equal(t, "in", string(got))
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return len(l.frames(t)) == 3 }, testTimeout, tick) // data, finish, verdict
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(3)))
	require.NoError(t, <-closed)

	recvOnly := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20})
	require.ErrorIs(t, recvOnly.CloseWrite(), ErrDirection)
	_, err = recvOnly.Write([]byte("x"))
	require.ErrorIs(t, err, ErrDirection)
	sendOnly := New(&fakeLink{}, Config{Header: hdr, Send: true, Role: Native, SendCredit: 1 << 20})
	_, err = sendOnly.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrDirection)
}
