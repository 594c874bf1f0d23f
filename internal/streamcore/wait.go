package streamcore

import (
	"context"
	"os"
	"sync"
	"time"
)

// Waiting: every blocking wait of a stream is on one of its two condition
// variables, and ends when the stream's state changes, when the caller's
// ctx ends (context.AfterFunc broadcasts), or when the read or write
// deadline passes (a timer broadcasts).

// watch wakes c's waiters when ctx ends; call the result when done waiting.
func (s *Stream) watch(ctx context.Context, c *sync.Cond) (stop func() bool) {
	if ctx == nil || ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() {
		s.mu.Lock()
		c.Broadcast()
		s.mu.Unlock()
	})
}

// interrupted says why a wait on the read (or write) side must stop: ctx
// ended or the deadline passed. Called with s.mu held.
func interrupted(ctx context.Context, dl time.Time) error {
	if ctx != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if !dl.IsZero() && !time.Now().Before(dl) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// SetReadDeadline bounds Read and WriteTo: once t passes they return
// os.ErrDeadlineExceeded. A zero t means no deadline.
func (s *Stream) SetReadDeadline(t time.Time) {
	s.mu.Lock()
	s.rdl = t
	s.rtimer = s.rearmLocked(s.rtimer, t, &s.recvCond)
	s.recvCond.Broadcast()
	s.mu.Unlock()
}

// SetWriteDeadline bounds Write, ReadFrom and WriteHole likewise.
func (s *Stream) SetWriteDeadline(t time.Time) {
	s.mu.Lock()
	s.wdl = t
	s.wtimer = s.rearmLocked(s.wtimer, t, &s.sendCond)
	s.sendCond.Broadcast()
	s.mu.Unlock()
}

func (s *Stream) rearmLocked(old *time.Timer, t time.Time, c *sync.Cond) *time.Timer {
	if old != nil {
		old.Stop()
	}
	if t.IsZero() || s.released {
		return nil
	}
	d := time.Until(t)
	if d <= 0 {
		return nil // expired: the broadcast that follows wakes the waiters
	}
	return time.AfterFunc(d, func() {
		s.mu.Lock()
		c.Broadcast()
		s.mu.Unlock()
	})
}

func (s *Stream) stopTimersLocked() {
	for _, t := range []*time.Timer{s.rtimer, s.wtimer} {
		if t != nil {
			t.Stop()
		}
	}
	s.rtimer, s.wtimer = nil, nil
}
