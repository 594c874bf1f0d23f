package rpc

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// probeSim drives the estimator with a link of the given rate and unloaded
// round trip: each probe sees min(window in use, rate × RTT) bytes, and a
// window beyond rate × RTT queues and lengthens the round trip.
func probeSim(t *testing.T, rate float64, minRTT time.Duration, probes int) *bdpEstimator {
	t.Helper()
	c := &Conn{cfg: resolve(nil), helloRTT: minRTT} // HELLO ran on the idle link
	b := &c.bdp
	b.init(c)
	now := time.Unix(0, 0)
	bdp := rate * minRTT.Seconds()
	for range probes {
		inUse := float64(b.prev)
		rtt := minRTT
		if inUse > bdp {
			rtt = time.Duration(float64(minRTT) * inUse / bdp) // the excess waits in a queue
		}
		sample := min(inUse, bdp) * float64(rtt) / float64(minRTT)
		b.sentAt = now
		b.bytesAt = c.stats.streamBytesIn.Load()
		c.stats.streamBytesIn.Add(int64(sample))
		now = now.Add(rtt)
		b.pong(now)
	}
	return b
}

// probeSimStreams is probeSim with n streams receiving, each under its
// share of the link's window (never below the floor). It returns the bytes
// in flight at the end.
func probeSimStreams(t *testing.T, n int, rate float64, minRTT time.Duration, probes int) float64 {
	t.Helper()
	c := &Conn{cfg: resolve(nil), helloRTT: minRTT}
	b := &c.bdp
	b.init(c)
	now := time.Unix(0, 0)
	bdp := rate * minRTT.Seconds()
	var inUse float64
	for range probes {
		inUse = float64(n) * float64(max(b.floor, b.prev/b.shares.Load()))
		rtt := minRTT
		if inUse > bdp {
			rtt = time.Duration(float64(minRTT) * inUse / bdp)
		}
		sample := min(inUse, bdp) * float64(rtt) / float64(minRTT)
		b.sentAt = now
		b.bytesAt = c.stats.streamBytesIn.Load()
		for i := range n {
			b.active[uint32(i)] = struct{}{}
		}
		c.stats.streamBytesIn.Add(int64(sample))
		now = now.Add(rtt)
		b.pong(now)
	}
	return inUse
}

// Streams share the link's window: with several receiving, what is in
// flight stays near 1.25 × bandwidth × RTT (or the streams' floors), not
// that times the number of streams, which would be a standing queue in
// front of every call.
func TestStreamsShareTheLinksWindow(t *testing.T) {
	const rate, rtt = 125e6, 40 * time.Millisecond // 1 Gbit/s, 40 ms: 5 MB
	bdp := rate * rtt.Seconds()
	for _, n := range []int{1, 2, 4} {
		inFlight := probeSimStreams(t, n, rate, rtt, 60)
		assert.InDelta(t, 1.25*bdp, inFlight, 0.15*bdp, "bytes in flight with %d streams", n)
	}
	floor := float64(resolve(nil).StreamWindow)
	assert.InDelta(t, 16*floor, probeSimStreams(t, 16, rate, rtt, 60), 0.05*16*floor, "16 streams: each at its floor")
}

func TestWindowSlowStartThenBandwidthTimesMinRTT(t *testing.T) {
	// 1 Gbit/s, 40 ms: the bandwidth-delay product is 5 MB.
	b := probeSim(t, 125e6, 40*time.Millisecond, 40)
	assert.True(t, b.filled, "slow start ended")
	bdp := 125e6 * 0.040
	assert.InDelta(t, 1.25*bdp, float64(b.window()), 0.1*bdp, "window ≈ 1.25 × BDP: full link, small queue")
}

func TestWindowStaysAtItsFloorOnAFastLocalLink(t *testing.T) {
	// 1.7 GB/s with a 100 µs round trip: 170 KB in flight is enough.
	b := probeSim(t, 1.7e9, 100*time.Microsecond, 200)
	assert.EqualValues(t, b.floor, b.window(), "never below StreamWindow, and no growth")
}

func TestWindowIsCapped(t *testing.T) {
	// 10 Gbit/s over 100 ms would want 156 MB.
	b := probeSim(t, 1.25e9, 100*time.Millisecond, 60)
	assert.EqualValues(t, b.c.cfg.MaxStreamWindow, b.window())
}

// A keepalive ping sent while a bandwidth probe is out (the link stalled
// for a keepalive interval) gets its own pong, indistinguishable from the
// probe's. Were it taken as the next probe's pong, a round trip of
// microseconds would become the connection's minimum for good, and windows
// would stay at their floor on a long link.
func TestStrayKeepalivePongIsNotAProbe(t *testing.T) {
	const rtt = 20 * time.Millisecond
	c := &Conn{cfg: resolve(nil), helloRTT: rtt}
	c.sched.init(c)
	c.sched.closing = true // sendKeepalive queues nothing
	c.bdp.init(c)

	c.bdp.dataReceived(1)       // probe P: its ping is out
	c.keepaliveTick(time.Now()) // silent for an interval: a second ping
	time.Sleep(2 * rtt)
	c.stats.streamBytesIn.Add(1 << 20)
	c.gotPong() // P's pong
	time.Sleep(2 * time.Millisecond)
	c.stats.streamBytesIn.Add(64 << 10)
	c.bdp.dataReceived(1) // the data behind it would start probe P2
	c.gotPong()           // the keepalive ping's pong, right behind
	c.bdp.mu.Lock()
	minRTT := c.bdp.minRTT
	c.bdp.mu.Unlock()
	if minRTT != 0 {
		assert.GreaterOrEqual(t, minRTT, rtt/2, "the smallest round trip on a %v link", rtt)
	}
}
