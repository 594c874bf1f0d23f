package streamcore

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// Verdicts under races: what a Close returns must say whether every byte
// sent was read, whichever goroutine or frame comes first.

// slowSendLink: the first SendFrame (the receiver's verdict) stalls until
// gate is closed, as a goroutine descheduled inside sendOOB would.
type slowSendLink struct {
	fakeLink
	once    sync.Once
	entered chan struct{}
	gate    chan struct{}
}

func (l *slowSendLink) SendFrame(msg []byte) {
	first := false
	l.once.Do(func() { first = true })
	if first {
		close(l.entered)
		<-l.gate
	}
	l.fakeLink.SendFrame(msg)
}

// Two Closes of a receiver that read everything both return nil.
func TestConcurrentReceiverClosesBothSucceed(t *testing.T) {
	for _, role := range []Role{Native, CompatServer} {
		l := &slowSendLink{entered: make(chan struct{}), gate: make(chan struct{})}
		s := New(l, Config{Header: hdr, Recv: true, Role: role, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("ten bytes!")))
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil))
		_, err := io.ReadAll(s)
		require.NoError(t, err)
		first := make(chan error, 1)
		go func() { first <- s.Close() }()
		<-l.entered // first Close: finSent set, verdict being sent
		second := make(chan error, 1)
		go func() { second <- s.Close() }()
		time.Sleep(10 * time.Millisecond)
		close(l.gate)
		assert.NoError(t, <-first, "role %d first Close", role)
		assert.NoError(t, <-second, "role %d second Close", role)
	}
}

// schedStallLink: the first Schedule writes the frames, then the calling
// goroutine (a Write) stalls before returning to pushData.
type schedStallLink struct {
	fakeLink
	once    sync.Once
	entered chan struct{}
	gate    chan struct{}
}

func (l *schedStallLink) Schedule(s *Stream, _ bool) {
	l.fakeLink.Schedule(s, true)
	first := false
	l.once.Do(func() { first = true })
	if first {
		close(l.entered)
		<-l.gate
	}
}

// A Write racing a Close from another goroutine: the receiver consumed all
// 10 bytes, and Close must count them as sent, though the Write had not
// returned (it once said "consumed 10 of the 0 bytes").
func TestWriteRacingCloseCountsItsBytes(t *testing.T) {
	l := &schedStallLink{entered: make(chan struct{}), gate: make(chan struct{})}
	s := New(l, Config{Header: hdr, Send: true, Role: Native, ChunkSize: 64 << 10, SendCredit: 1 << 20, RecvWindow: 1 << 20})
	wrote := make(chan error, 1)
	go func() { _, err := s.Write([]byte("ten bytes!")); wrote <- err }()
	<-l.entered // data queued and written; Write has not counted it yet
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return len(l.frames(t)) == 2 }, testTimeout, tick) // data, finish
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, verdict(10)))
	err := <-closed
	close(l.gate)
	require.NoError(t, <-wrote)
	assert.NoError(t, err, "every byte sent was consumed")
}

// A receiver that reads the data but not the trailing hole, then Closes:
// the hole is stream content it never read, so it aborts instead of sending
// a clean verdict.
func TestUnreadHoleIsNotAcknowledged(t *testing.T) {
	l := &fakeLink{}
	s := New(l, Config{Header: hdr, Recv: true, Role: Native, Sparse: true, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("abc")))
	require.NoError(t, feed(t, s, frame.TypeStreamHole, frame.StatusContinue, holePayload(1<<20)))
	require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil))
	_, err := io.ReadFull(s, make([]byte, 3))
	require.NoError(t, err)
	require.ErrorIs(t, s.Close(), ErrReceiverClosed)
	hs := l.frames(t)
	require.NotEmpty(t, hs)
	assert.Equal(t, frame.StatusError, hs[len(hs)-1].Status, "1 MiB of zeros left unread: an abort, not a verdict")
}

// A receiver that closed before the upload arrived (its finish crossed the
// sender's data and finish): Close's doc says this Close returns an error too.
func TestEarlyCloserLearnsItDroppedAnUpload(t *testing.T) {
	t.Run("native", func(t *testing.T) {
		l := &fakeLink{}
		s := New(l, Config{Header: hdr, Recv: true, Role: Native, RecvWindow: 1 << 20, MaxWindow: 1 << 20})
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		require.Eventually(t, func() bool { return len(l.frames(t)) == 1 }, testTimeout, tick)
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("upload")))
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil)) // the sender's finish
		assert.Error(t, <-closed, "the upload was not read")
	})
	t.Run("compat server", func(t *testing.T) {
		l := &fakeLink{}
		s := New(l, Config{Header: hdr, Recv: true, Role: CompatServer})
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		require.Eventually(t, func() bool { return len(l.frames(t)) == 1 }, testTimeout, tick)
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusContinue, []byte("upload")))
		require.NoError(t, feed(t, s, frame.TypeStream, frame.StatusOK, nil)) // the client's finish
		assert.Error(t, <-closed, "the upload was refused with STREAM/ERROR")
	})
}
