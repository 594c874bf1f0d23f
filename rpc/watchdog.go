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
// Bytes waiting in our socket's receive queue mean the peer sent and we
// did not read (our read loop starved: a loaded machine, the race
// detector, a GC): the window then counts as progress.
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
	if got-w.got < max(need, 1) && !c.unreadIn() {
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
	owed, writing, busy := c.sched.owed()
	// With the token free nothing waits on the peer: the writer has yet to
	// run (a loaded machine, the race detector), which is our delay.
	if out != w.out || owed == 0 || !busy {
		w.out, w.since = out, now
		return nil
	}
	allowed := c.cfg.MessageTimeout + time.Duration(writing)*time.Second/time.Duration(c.cfg.MinMessageRate)
	if stuck := now.Sub(w.since); stuck >= allowed {
		return fmt.Errorf("%w: %d bytes of replies waiting, nothing written for %v", ErrPeerNotReading, owed, stuck.Round(time.Millisecond))
	}
	return nil
}

// sockCheck is stallCheck's half for what has left our queues: replies
// already written sit in the socket's send queue, not in memory of ours,
// when the kernel took them all (a few MiB on loopback), so nothing is
// owed and stallCheck is content while the peer reads none of them and
// keeps the connection alive with pings; our pongs, a few bytes each, are
// still taken by the kernel (appended to its last segment), so even
// bytesOut moves. So at the first tick after replies were written, the
// check marks how much of the send queue they (and what came before) make;
// until the peer has taken that much, it must take bytes, or it is reaped
// as stallCheck reaps a write that makes no progress.
//
// The queue counts TLS records or a unix socket's buffers, not our bytes:
// both only make it longer, so the mark grants each frame written after the
// reply 1 KiB, and what the peer took is understated, never overstated,
// except by the part of a Write under way that the kernel has not taken
// yet (bytesOut counts it first), which is why progress is measured from
// the highest take seen. A connection with an open stream is left alone,
// as stallCheck leaves a writer blocked on stream data: a compat peer whose
// stream reader is behind stops reading its socket, and that is no attack.
type sockCheck struct {
	end      int64 // stats.msgEnd at the mark
	part     int64 // bytes of the queue at the mark that are replies or older
	q0, out0 int64 // the send queue and bytesOut at the mark
	took     int64 // the most the peer was seen to have taken since the mark
	since    time.Time
	watching bool
}

// maxSegment bounds what the peer's kernel takes from the send queue in one
// step, as it opens its window.
const maxSegment = 64 << 10

func (w *sockCheck) check(c *Conn, now time.Time) error {
	if c.sockq == nil {
		return nil
	}
	// While replies are queued or being written, stallCheck judges: a
	// Write under way was counted whole in bytesOut while the kernel takes
	// it bit by bit, as fast as the peer reads, so the queue would not
	// shrink however fast the peer reads.
	owed, _, _ := c.sched.owed()
	end, ends := c.stats.msgEnd.Load(), c.stats.msgFrames.Load()
	q, ok := c.sockq()
	out, frames := c.stats.bytesOut.Load(), c.stats.framesOut.Load()
	if !ok || owed > 0 || c.streamsOpen() {
		w.watching = false
		return nil
	}
	if !w.watching || end != w.end { // replies written since the mark
		after := out - end
		grace := after + after/256 + 1024*(frames-ends+1)
		*w = sockCheck{end: end, part: q - grace, q0: q, out0: out, since: now, watching: true}
		return nil
	}
	took := w.q0 + (out - w.out0) - q
	if took >= w.part { // read, up to the mark (or nothing of it was queued)
		return nil
	}
	if took > w.took {
		w.took, w.since = took, now
		return nil
	}
	// The queue shrinks by up to a segment at a time: a peer reading at
	// MinMessageRate takes one within the allowance.
	allowed := c.cfg.MessageTimeout + time.Duration(min(q, maxSegment))*time.Second/time.Duration(c.cfg.MinMessageRate)
	if stuck := now.Sub(w.since); stuck >= allowed {
		return fmt.Errorf("%w: %d bytes of replies written to the socket, none taken by the peer for %v", ErrPeerNotReading, w.part-took, stuck.Round(time.Millisecond))
	}
	return nil
}

// unreadIn reports whether the socket's receive queue holds bytes our read
// loop has not taken yet (false if unknown).
func (c *Conn) unreadIn() bool {
	if c.sockIn == nil {
		return false
	}
	n, ok := c.sockIn()
	return ok && n > 0
}

func (c *Conn) streamsOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams) > 0
}
