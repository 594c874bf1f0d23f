package streamcore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// pipeLink queues everything a stream sends; the test delivers it to the
// peer when it chooses, so crossings are deterministic.
type pipeLink struct {
	mu       sync.Mutex
	out      [][]byte // whole messages, or credit as a 9-byte "C"+n
	released bool
}

func (l *pipeLink) Schedule(s *Stream, _ bool) {
	for {
		f, more := s.PopFrame()
		if b := f.Bytes(); len(b) > 0 {
			l.mu.Lock()
			l.out = append(l.out, bytes.Clone(b))
			l.mu.Unlock()
		}
		f.Done()
		if !more {
			return
		}
	}
}
func (l *pipeLink) SendFrame(msg []byte) {
	l.mu.Lock()
	l.out = append(l.out, bytes.Clone(msg))
	l.mu.Unlock()
}
func (l *pipeLink) SendCredit(_ uint32, n uint64, _ bool) {
	b := make([]byte, 9)
	b[0] = 'C'
	frame.PutCredit(b[1:], n)
	l.mu.Lock()
	l.out = append(l.out, b)
	l.mu.Unlock()
}
func (l *pipeLink) Release(*Stream) { l.mu.Lock(); l.released = true; l.mu.Unlock() }

// deliver hands the peer every message queued so far, credit included.
func deliver(t *testing.T, from *pipeLink, to *Stream) []frame.Header {
	from.mu.Lock()
	msgs := from.out
	from.out = nil
	from.mu.Unlock()
	var hs []frame.Header
	for _, m := range msgs {
		if m[0] == 'C' && len(m) == 9 {
			n, _ := frame.ParseCredit(m[1:])
			require.NoError(t, to.AddCredit(n))
			continue
		}
		fr := frame.NewReader(bytes.NewReader(m), nil)
		h, _, err := fr.Next()
		require.NoError(t, err)
		hs = append(hs, h)
		require.NoError(t, to.HandleFrame(h, fr))
	}
	return hs
}

func nativePair(sparse bool) (a, b *Stream, la, lb *pipeLink) {
	la, lb = &pipeLink{}, &pipeLink{}
	cfg := Config{Header: hdr, Role: Native, Sparse: sparse, SendCredit: 1 << 20, RecvWindow: 1 << 20, MaxWindow: 1 << 20}
	send, recv := cfg, cfg
	send.Send, recv.Recv = true, true
	return New(la, send), New(lb, recv), la, lb
}

func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func wait(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("%s is blocked", what)
		return nil
	}
}

// The package doc's own recipe (AfterFunc -> CloseWithError) followed by
// the usual Close: Close reports the abort, not success (it once said nil
// though the data was dropped).
func TestCloseAfterCloseWithErrorIsNotASuccess(t *testing.T) {
	s, r, ls, _ := nativePair(false)
	_, err := s.Write([]byte("data that is never read"))
	require.NoError(t, err)
	require.NoError(t, s.CloseWithError(context.DeadlineExceeded)) // timer fired
	deliver(t, ls, r)
	assert.Error(t, s.Close(), "sender's Close after its own abort: nothing was read")
	_ = r.Close()
}

// Finish(ctx) expired returns ctx's error; a deferred Close after it must
// not say nil either.
func TestCloseAfterAnExpiredFinishIsNotASuccess(t *testing.T) {
	s, r, ls, _ := nativePair(false)
	_, err := s.Write([]byte("data"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.Finish(ctx), context.DeadlineExceeded)
	assert.Error(t, s.Close(), "second Close must not turn the failed finish into success")
	deliver(t, ls, r)
	_ = r.Close()
}

// A receiver that read part of a hole (the hole is in s.cur, not inq) and
// Closes aborts: a clean verdict would let the sender's Close return nil.
func TestPartlyReadHoleIsNotAcknowledged(t *testing.T) {
	s, r, ls, lr := nativePair(true)
	_, err := s.Write([]byte("abc"))
	require.NoError(t, err)
	require.NoError(t, s.WriteHole(context.Background(), 1<<20))
	closed := async(s.Close)
	require.Eventually(t, func() bool { ls.mu.Lock(); defer ls.mu.Unlock(); return len(ls.out) == 3 }, testTimeout, time.Millisecond)
	deliver(t, ls, r)
	_, err = io.ReadFull(r, make([]byte, 3+10)) // the data and 10 of 1 MiB hole bytes
	require.NoError(t, err)
	_ = r.Close()
	hs := deliver(t, lr, s)
	t.Logf("receiver sent %v", hs)
	assert.Error(t, wait(t, closed, "sender Close"), "1 MiB - 10 bytes of the hole were never read")
}

// A hole-only upload whose receiver closed before it arrived: holes count
// as content in the crossing checks, so the sender's Close fails.
func TestHoleOnlyUploadCrossingAnEarlyClose(t *testing.T) {
	s, r, ls, lr := nativePair(true)
	rClosed := async(r.Close) // early close: finish of an empty stream
	require.Eventually(t, func() bool { lr.mu.Lock(); defer lr.mu.Unlock(); return len(lr.out) == 1 }, testTimeout, time.Millisecond)
	require.NoError(t, s.WriteHole(context.Background(), 1<<20)) // before r's finish arrives
	sClosed := async(s.Close)
	require.Eventually(t, func() bool { ls.mu.Lock(); defer ls.mu.Unlock(); return len(ls.out) == 2 }, testTimeout, time.Millisecond)
	// The finishes cross.
	deliver(t, lr, s)
	deliver(t, ls, r)
	deliver(t, lr, s)
	deliver(t, ls, r)
	serr := wait(t, sClosed, "sender Close")
	rerr := wait(t, rClosed, "receiver Close")
	t.Logf("sender Close: %v; receiver Close: %v", serr, rerr)
	assert.Error(t, serr, "the hole was dropped by the receiver (its Close says %v)", rerr)
}

// The sender learns of the early close after queueing the hole but before
// its own Close: it must not take the receiver's role and acknowledge.
func TestHoleOnlyUploadAfterAnEarlyClose(t *testing.T) {
	s, r, ls, lr := nativePair(true)
	rClosed := async(r.Close)
	require.Eventually(t, func() bool { lr.mu.Lock(); defer lr.mu.Unlock(); return len(lr.out) == 1 }, testTimeout, time.Millisecond)
	require.NoError(t, s.WriteHole(context.Background(), 1<<20))
	deliver(t, lr, s) // r's finish reaches s
	serr := s.Close()
	deliver(t, ls, r) // hole, then s's "verdict"
	rerr := wait(t, rClosed, "receiver Close")
	t.Logf("sender Close: %v; receiver Close: %v", serr, rerr)
	assert.False(t, serr == nil && rerr == nil, "both Closes succeeded while the 1 MiB hole was never read")
}

// libvirtd's sender that fails sends an empty CONTINUE, then STREAM/ERROR
// (capture 10); our CompatServer does the same.
func TestCompatServerSenderAbortSendsTheEndMarkerFirst(t *testing.T) {
	l := &pipeLink{}
	s := New(l, Config{Header: hdr, Send: true, Role: CompatServer})
	require.NoError(t, s.CloseWithError(errors.New("Unable to read: Is a directory")))
	var sts []frame.Status
	for _, m := range l.out {
		fr := frame.NewReader(bytes.NewReader(m), nil)
		h, n, err := fr.Next()
		require.NoError(t, err)
		t.Logf("%s status %d payload %d", h.Type, h.Status, n)
		sts = append(sts, h.Status)
	}
	assert.Equal(t, []frame.Status{frame.StatusContinue, frame.StatusError}, sts, "capture 10: empty CONTINUE, then ERROR")
}
