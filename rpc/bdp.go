package rpc

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

// bdpMinInterval spaces bandwidth probes: one per round trip, but no more
// than one a millisecond on a fast local link.
const bdpMinInterval = time.Millisecond

// rateSamples is how many probes the delivery-rate maximum is taken over.
const rateSamples = 8

// shareUnit is the fixed-point unit of bdpEstimator.shares.
const shareUnit = 256

// bdpEstimator sizes stream windows from the link itself, the way BBR sizes
// a congestion window. The receiver sends a keepalive PING while stream data
// arrives and counts the bytes received until the PONG: that gives the
// delivery rate. While the window is used up within a round trip that shows
// no queueing, the target doubles (slow start). Once the link is full (a
// probe's round trip grows past 1.25 × the smallest, or the window is no
// longer used up), the target follows 1.25 × the highest recent rate × the
// smallest round trip, up or down.
//
// The smallest round trip matters: the PONG travels behind the very data
// whose queue a big window creates, so the measured round trip grows with
// the window, and an estimate from bytes per measured round trip (gRPC's)
// inflates the window until the queue is megabytes and a call stuck behind
// it waits milliseconds on a local link, or a whole extra queue's delay on a
// long one. With the minimum, a fast local link keeps windows at their floor
// (StreamWindow) while a long fat link gets bandwidth × RTT and little more.
type bdpEstimator struct {
	c  *Conn
	mu sync.Mutex
	// the outstanding probe
	sentAt    time.Time
	bytesAt   int64
	lastProbe time.Time
	// a keepalive ping went out over a probe: the pongs cannot be told
	// apart, so probing waits until the stray one is surely back
	tainted   bool
	holdUntil time.Time

	// The link's window is shared by the streams receiving on it: each
	// gets target / shares, where shares is the bytes all streams received
	// during the last probe over the most one stream received (N streams
	// filling their windows count N; a stream that only trickles next to a
	// bulk one counts next to nothing, so the bulk one keeps the link's
	// window). Each stream's own window would put streams × bandwidth ×
	// RTT in flight, a standing queue.
	active map[uint32]int64 // bytes received per stream during this probe
	shares atomic.Int64     // in 1/shareUnit

	target  int64
	prev    int64 // the target one probe ago: what the sender was using during this probe
	floor   int64
	minRTT  time.Duration
	filled  bool // slow start is over
	rates   [rateSamples]float64
	rateIdx int
}

func (b *bdpEstimator) init(c *Conn) {
	b.c = c
	b.floor = int64(c.cfg.StreamWindow)
	b.target = b.floor
	b.prev = b.floor
	b.active = make(map[uint32]int64)
	b.shares.Store(shareUnit)
}

// window is the receive window of the whole link.
func (b *bdpEstimator) window() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.target
}

// streamWindow is the receive window each stream moves toward: its share
// of the link's (streams never go below their floor, StreamWindow).
func (b *bdpEstimator) streamWindow() int64 {
	return b.window() * shareUnit / b.shares.Load()
}

// dataReceived runs on the read loop after n bytes of data of stream
// serial: it starts a probe when none is outstanding.
func (b *bdpEstimator) dataReceived(serial uint32, n int64) {
	now := time.Now()
	b.mu.Lock()
	b.active[serial] += n
	if !b.sentAt.IsZero() || b.tainted || now.Before(b.holdUntil) || now.Sub(b.lastProbe) < bdpMinInterval {
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

// keepalivePing is called when the keepalive sends a ping while another
// ping is unanswered: the outstanding probe, if any, is dropped.
func (b *bdpEstimator) keepalivePing() {
	b.mu.Lock()
	b.sentAt = time.Time{}
	b.tainted = true
	b.mu.Unlock()
}

// pong ends a probe.
func (b *bdpEstimator) pong(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tainted {
		// One or two pongs answer the two pings; wait out the second.
		b.tainted = false
		b.holdUntil = now.Add(max(b.c.cfg.KeepaliveInterval, time.Second, 4*b.c.helloRTT))
		return
	}
	if b.sentAt.IsZero() {
		return
	}
	rtt := now.Sub(b.sentAt)
	sample := b.c.stats.streamBytesIn.Load() - b.bytesAt
	b.sentAt = time.Time{}
	if rtt <= 0 {
		return
	}
	var total, top int64
	for _, n := range b.active {
		total += n
		top = max(top, n)
	}
	if top > 0 {
		b.shares.Store(max(shareUnit, total*shareUnit/top))
	}
	clear(b.active)
	if b.minRTT == 0 || rtt < b.minRTT {
		b.minRTT = rtt
	}
	if h := b.c.helloRTT; h > 0 && h < b.minRTT {
		b.minRTT = h
	}
	b.rates[b.rateIdx%rateSamples] = float64(sample) / rtt.Seconds()
	b.rateIdx++
	// each stream is capped at MaxStreamWindow, the link at that × its shares
	maxCap := min(int64(b.c.cfg.MaxStreamWindow)*b.shares.Load()/shareUnit, int64(b.c.cfg.ConnectionWindow))
	// Credit granted at one probe reaches the sender a round trip later, so
	// this probe's bytes were sent under the previous probe's target.
	inUse := b.prev
	b.prev = b.target
	if !b.filled {
		if 3*sample >= 2*inUse && 4*rtt < 5*b.minRTT {
			b.target = min(max(2*inUse, b.target), maxCap)
			return
		}
		if 4*rtt >= 5*b.minRTT || b.target == inUse {
			b.filled = true // a queue is building, or the window stopped filling
		} else {
			return // the last doubling has not reached the sender yet
		}
	}
	var rate float64
	for _, r := range b.rates {
		rate = max(rate, r)
	}
	b.target = min(max(int64(1.25*rate*b.minRTT.Seconds()), b.floor), maxCap)
}
