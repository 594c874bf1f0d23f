package rpc

import (
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

// bdpMinInterval spaces bandwidth probes: one per round trip, but no more
// than one a millisecond on a fast local link.
const bdpMinInterval = time.Millisecond

// bdpEstimator sizes stream windows from the link itself. The receiver
// sends a keepalive PING while stream data arrives and counts the bytes
// received until the PONG: that gives the delivery rate. While the window
// is used up within a round trip that shows no queueing, the target doubles
// (slow start); after that it is 1.25 × rate × the smallest round trip seen,
// as BBR estimates the bandwidth-delay product. Using the smallest round trip matters: the PONG
// travels behind the very data whose queue a big window creates, so the
// measured round trip grows with the window, and a gRPC-style estimate
// (bytes per measured round trip) inflates the window until the queue is
// megabytes and a call stuck behind it waits milliseconds. With the minimum,
// a fast local link keeps windows near their floor (StreamWindow) while a
// long fat link still reaches bandwidth × RTT.
type bdpEstimator struct {
	c  *Conn
	mu sync.Mutex
	// the outstanding probe
	sentAt    time.Time
	bytesAt   int64
	lastProbe time.Time
	target    int64
	minRTT    time.Duration
}

func (b *bdpEstimator) init(c *Conn) {
	b.c = c
	b.target = int64(c.cfg.StreamWindow)
}

// window is the receive window streams grow toward.
func (b *bdpEstimator) window() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.target
}

// dataReceived runs on the read loop after stream data: it starts a probe
// when none is outstanding.
func (b *bdpEstimator) dataReceived() {
	now := time.Now()
	b.mu.Lock()
	if !b.sentAt.IsZero() || now.Sub(b.lastProbe) < bdpMinInterval || b.target >= int64(b.c.cfg.MaxStreamWindow) {
		b.mu.Unlock()
		return
	}
	if !b.c.stats.pingSent.CompareAndSwap(0, now.UnixNano()) {
		b.mu.Unlock()
		return // a keepalive ping is out; its pong will do for the RTT
	}
	b.sentAt, b.lastProbe = now, now
	b.bytesAt = b.c.stats.streamBytesIn.Load()
	b.mu.Unlock()
	b.c.sendKeepalive(frame.KeepalivePing, false)
}

// pong ends a probe.
func (b *bdpEstimator) pong(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sentAt.IsZero() {
		return
	}
	rtt := now.Sub(b.sentAt)
	sample := b.c.stats.streamBytesIn.Load() - b.bytesAt
	b.sentAt = time.Time{}
	if rtt <= 0 {
		return
	}
	if b.minRTT == 0 || rtt < b.minRTT {
		b.minRTT = rtt
	}
	if h := b.c.helloRTT; h > 0 && h < b.minRTT {
		b.minRTT = h
	}
	want := b.target
	if 3*sample >= 2*b.target && 2*rtt < 3*b.minRTT {
		// The window was used up within a round trip and no queue is
		// building: the link can take more. Double, like slow start.
		want = 2 * b.target
	} else {
		// At or past the link's capacity: bandwidth × the unloaded RTT,
		// plus a quarter for jitter. More only builds a queue.
		rate := float64(sample) / rtt.Seconds()
		want = int64(1.25 * rate * b.minRTT.Seconds())
	}
	b.target = min(max(want, b.target), int64(b.c.cfg.MaxStreamWindow))
}
