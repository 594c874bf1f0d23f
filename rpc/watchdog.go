package rpc

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// countingReader counts the bytes the frame reader takes from the
// connection, so the watchdog can tell a message still arriving from one
// read whole (a compat stream may then pause the read loop for its reader,
// and that silence is ours, not the peer's). One atomic add per read of the
// connection, not per frame: no lock, no allocation.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// slowCheck watches the message being received. A message must keep
// arriving at MinMessageRate, measured over each MessageTimeout: within
// every window, at least rate × window more of it (or all of it) must come.
// Keepalive cannot do this job: a peer mid-message is not silent between
// messages, and the read loop (which counts any message as liveness) is
// blocked reading it.
type slowCheck struct {
	end, got, since int64 // the message watched, bytes of it at since
	at              time.Time
}

// check returns an error if the peer has crawled through the last window.
func (w *slowCheck) check(c *Conn, now time.Time) error {
	end, got := c.msgEnd.Load(), c.rxBytes.Load()
	if got >= end { // between messages, or the body is in: keepalive's job
		w.end = 0
		return nil
	}
	if w.end != end { // a new message: start its first window
		*w = slowCheck{end: end, got: got, since: got, at: now}
		return nil
	}
	window := c.cfg.MessageTimeout
	if now.Sub(w.at) < window {
		return nil
	}
	need := min(end-w.got, int64(c.cfg.MinMessageRate)*int64(window/time.Millisecond)/1000)
	if got-w.got < max(need, 1) {
		return fmt.Errorf("%w: %d bytes of the message's last %d in %v (at least %d B/s required; %d bytes still to come)",
			ErrSlowPeer, got-w.got, end-w.got, now.Sub(w.at).Round(time.Millisecond), c.cfg.MinMessageRate, end-got)
	}
	w.got, w.at = got, now
	return nil
}

// ErrPeerNotReading: the peer left replies it asked for unread longer than
// MessageTimeout and MinMessageRate allow (see Options.MessageTimeout).
var ErrPeerNotReading = errors.New("virtrpc: peer does not read its replies")

// stallCheck reaps a peer that keeps sending (pings, say, so keepalive
// holds it alive) but reads nothing, while replies to it wait: they are
// memory held for it, within ConnectionMemory, for as long as it likes.
// Our write must progress as the peer's must: a batch of n bytes of
// replies gets MessageTimeout + n/MinMessageRate. Bytes are counted before
// each Write (scheduler.write), so a Write that blocks shows no progress;
// nothing is added to the write path. A writer blocked on stream data alone
// is not reaped: in compat mode a peer whose stream reader is behind stops
// reading, as libvirt does, and that is no attack.
type stallCheck struct {
	out   int64
	since time.Time
}

func (w *stallCheck) check(c *Conn, now time.Time) error {
	out := c.stats.bytesOut.Load()
	owed, writing := c.sched.owed()
	if out != w.out || owed == 0 {
		w.out, w.since = out, now
		return nil
	}
	allowed := c.cfg.MessageTimeout + time.Duration(writing)*time.Second/time.Duration(c.cfg.MinMessageRate)
	if stuck := now.Sub(w.since); stuck >= allowed {
		return fmt.Errorf("%w: %d bytes of replies waiting, nothing written for %v", ErrPeerNotReading, owed, stuck.Round(time.Millisecond))
	}
	return nil
}
