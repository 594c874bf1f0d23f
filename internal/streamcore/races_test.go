package streamcore

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// Hostile frames and calls racing each other from different goroutines,
// as the package doc allows (Close and CloseWithError from any goroutine).

func holePayload(n int64) []byte {
	b := make([]byte, frame.HolePayloadSize)
	frame.PutHole(b, n, 0)
	return b
}

// Two holes whose lengths add up past MaxInt64 stay two holes: merged, they
// would turn negative and Read would slice with a negative length.
func TestHolesThatWouldOverflowStaySeparate(t *testing.T) {
	s := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, Sparse: true, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
	require.NoError(t, feed(t, s, frame.TypeStreamHole, frame.StatusContinue, holePayload(math.MaxInt64)))
	require.NoError(t, feed(t, s, frame.TypeStreamHole, frame.StatusContinue, holePayload(math.MaxInt64)))
	p := bytes.Repeat([]byte{0xff}, 16)
	n, err := s.Read(p)
	require.NoError(t, err)
	assert.Equal(t, 16, n)
	assert.Equal(t, make([]byte, 16), p, "a hole reads as zeros")
	_ = s.CloseWithError(nil)
}

// blockingReader signals when its Read has started and returns its bytes
// once released.
type blockingReader struct {
	entered, release chan struct{}
	done             bool
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	close(r.entered)
	<-r.release
	r.done = true
	return copy(p, "late data"), nil
}

// Close while ReadFrom waits on its source: the data that source yields
// afterwards is refused with ErrClosed, not queued behind the finish (which
// a receiver takes for a protocol violation of the whole connection).
func TestCloseDuringReadFromSendsNoDataAfterTheFinish(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: Native, ChunkSize: 64 << 10, SendCredit: 1 << 20, RecvWindow: 1 << 20})
	r := &blockingReader{entered: make(chan struct{}), release: make(chan struct{})}
	copied := make(chan error, 1)
	go func() { _, err := s.ReadFrom(r); copied <- err }()
	<-r.entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return len(l.frames(t)) == 1 }, testTimeout, tick) // the finish is out
	close(r.release)
	require.ErrorIs(t, <-copied, ErrClosed, "ReadFrom after the finish")

	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(0))) // the receiver's verdict
	require.NoError(t, <-closed)
	want := []frame.Header{{Prog: hdr.Prog, Vers: hdr.Vers, Proc: hdr.Proc, Serial: hdr.Serial, Type: frame.TypeStream, Status: frame.StatusOK}}
	assert.Empty(t, cmp.Diff(want, l.frames(t)), "frames sent: the finish and nothing after it")
	assert.Zero(t, s.BytesSent(), "refused data is not counted as sent")
}

// CloseWithError while Close waits for the receiver's verdict (the
// package doc's way to bound a transfer): the waiting Close returns the
// abort's error instead of waiting for a verdict that will never come.
func TestCloseWithErrorWakesAWaitingClose(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: Native, ChunkSize: 64 << 10, SendCredit: 1 << 20, RecvWindow: 1 << 20})
	_, err := s.Write([]byte("data"))
	require.NoError(t, err)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return len(l.frames(t)) == 2 }, testTimeout, tick) // data, OK
	deadline := errors.New("transfer deadline")
	require.NoError(t, s.CloseWithError(deadline))
	select {
	case err := <-closed:
		require.ErrorIs(t, err, deadline)
	case <-time.After(testTimeout):
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(4))) // let it go, for goleak
		<-closed
		t.Fatal("Close still waits for a verdict after CloseWithError")
	}
	hs := l.frames(t)
	require.Len(t, hs, 3)
	assert.Equal(t, frame.StatusError, hs[2].Status, "the abort reached the peer")
}

// Two Closes of one sender: one finish goes out, and both return the
// receiver's verdict.
func TestConcurrentClosesShareOneFinish(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: Native, ChunkSize: 64 << 10, SendCredit: 1 << 20, RecvWindow: 1 << 20})
	closed := make(chan error, 2)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return len(l.frames(t)) == 1 }, testTimeout, tick)
	go func() { closed <- s.Close() }()
	time.Sleep(10 * time.Millisecond) // give the second Close the chance to send a second finish
	sinkFailed := frame.NewError(frame.CodeInternalError, "disk full")
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusError, frame.EncodeError(sinkFailed)))
	for range 2 {
		var fe *frame.Error
		require.ErrorAs(t, <-closed, &fe)
		assert.Equal(t, "disk full", fe.Text())
	}
	assert.Len(t, l.frames(t), 1, "one finish")
}

// A peer sending one-byte frames to a slow reader: memory held stays
// within a few times the bytes buffered (each frame would otherwise pin a
// 16 KiB buffer), and the bytes read back in order.
func TestTinyFramesHoldBoundedMemory(t *testing.T) {
	const frames = 4 << 10
	s := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: frames, MaxWindow: frames, BufferLimit: 4 * frames})
	want := make([]byte, frames)
	for i := range want {
		want[i] = byte(i)
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, want[i:i+1]))
	}
	s.mu.Lock()
	held := 0
	for _, c := range s.inq {
		held += cap(*c.buf)
	}
	buffered := s.inBytes
	s.mu.Unlock()
	require.Equal(t, frames, buffered)
	assert.LessOrEqual(t, held, 4*buffered, "memory held for %d buffered bytes", buffered)

	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil))
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the bytes read back in order")
	require.NoError(t, s.Close())
}

// Native verdicts count the bytes consumed: a count short of what was sent
// fails Close, and an empty OK after our finish is the peer's own finish
// (both closed at once), which fails Close if we had sent data.
func TestNativeVerdicts(t *testing.T) {
	newSender := func(t *testing.T) (*Stream, *fakeLink, chan error) {
		l := &fakeLink{}
		s := New(l, Config{Header: hdr, Send: true, Role: Native, ChunkSize: 64 << 10, SendCredit: 1 << 20, RecvWindow: 1 << 20})
		_, err := s.Write([]byte("ten bytes!"))
		require.NoError(t, err)
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		require.Eventually(t, func() bool { return len(l.frames(t)) == 2 }, testTimeout, tick) // data, finish
		return s, l, closed
	}
	t.Run("every byte consumed", func(t *testing.T) {
		s, _, closed := newSender(t)
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(10)))
		require.NoError(t, <-closed)
	})
	t.Run("fewer bytes consumed than sent", func(t *testing.T) {
		s, _, closed := newSender(t)
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(4)))
		err := <-closed
		require.ErrorIs(t, err, ErrIncomplete)
		assert.ErrorContains(t, err, "consumed 4 of the 10 bytes")
	})
	t.Run("a finish toward a side that only sends", func(t *testing.T) {
		s, _, closed := newSender(t)
		require.ErrorIs(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil), ErrDirection, "a protocol error: the connection closes")
		s.Fail(errors.New("connection closed"))
		require.Error(t, <-closed)
	})
	t.Run("a verdict without a finish", func(t *testing.T) {
		s := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20})
		assert.ErrorContains(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(0)), "verdict without a finish")
	})
	t.Run("an OK payload that is neither", func(t *testing.T) {
		s := New(&fakeLink{}, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20})
		assert.ErrorContains(t, feed(t, s, frame.TypeStream, frame.StatusOK, []byte("12345")), "5-byte payload")
	})
	t.Run("the receiver's verdict counts what it read", func(t *testing.T) {
		l := &fakeLink{}
		s := New(l, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("ten bytes!")))
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil))
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		require.Equal(t, "ten bytes!", string(got))
		require.NoError(t, s.Close())
		l.mu.Lock()
		out := l.out.Bytes()
		l.mu.Unlock()
		fr := frame.NewReader(bytes.NewReader(out), nil)
		h, n, err := fr.Next()
		require.NoError(t, err)
		assert.Equal(t, frame.StatusOK, h.Status)
		require.Equal(t, frame.VerdictPayloadSize, n)
		p, err := fr.Payload()
		require.NoError(t, err)
		consumed, err := frame.ParseVerdict(p)
		require.NoError(t, err)
		assert.EqualValues(t, 10, consumed)
	})
	t.Run("a receiver closing with data unread aborts", func(t *testing.T) {
		l := &fakeLink{}
		s := New(l, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("unread")))
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil))
		require.ErrorIs(t, s.Close(), ErrReceiverClosed, "closed before the end: an error, not a success")
		hs := l.frames(t)
		require.NotEmpty(t, hs)
		assert.Equal(t, frame.StatusError, hs[len(hs)-1].Status, "an abort, not a verdict")
	})
}

// Two net.Conn ends that close without reading: each one's verdict on the
// other's data is short, which must not stop either from answering the
// other's finish (both sides would stay registered for good).
func TestCloseNetWithDataUnreadStillAnswersThePeer(t *testing.T) {
	la, lb := &pipeLink{}, &pipeLink{}
	cfg := Config{Header: hdr, Role: Native, Send: true, Recv: true, SendCredit: 1 << 20, RecvWindow: 1 << 20, MaxWindow: 1 << 20}
	a, b := New(la, cfg), New(lb, cfg)
	_, err := a.Write([]byte("from a"))
	require.NoError(t, err)
	a.CloseNet()
	deliver(t, la, b) // a's data and finish
	b.CloseNet()      // nothing read: verdict 0 of 6, then b's finish
	deliver(t, lb, a) // a learns its data was not read, and answers b's finish
	deliver(t, la, b)
	la.mu.Lock()
	lb.mu.Lock()
	assert.True(t, la.released, "a is released once b answered")
	assert.True(t, lb.released, "b is released once a answered")
	lb.mu.Unlock()
	la.mu.Unlock()
	a.mu.Lock()
	assert.ErrorIs(t, a.outcomeLocked(), ErrIncomplete, "the short verdict is a's outcome")
	a.mu.Unlock()
}
