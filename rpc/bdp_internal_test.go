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

// probeSimStreams runs n bulk streams through probeSimDemand and returns
// the bytes they had in flight at the end.
func probeSimStreams(t *testing.T, n int, rate float64, minRTT time.Duration, probes int) float64 {
	var total float64
	for _, w := range probeSimDemand(t, make([]float64, n), nil, rate, minRTT, probes) {
		total += w
	}
	return total
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

	c.bdp.dataReceived(1, 1<<20) // probe P: its ping is out
	c.keepaliveTick(time.Now())  // silent for an interval: a second ping
	time.Sleep(2 * rtt)
	c.stats.streamBytesIn.Add(1 << 20)
	c.gotPong() // P's pong
	time.Sleep(2 * time.Millisecond)
	c.stats.streamBytesIn.Add(64 << 10)
	c.bdp.dataReceived(1, 64<<10) // the data behind it would start probe P2
	c.gotPong()                   // the keepalive ping's pong, right behind
	c.bdp.mu.Lock()
	minRTT := c.bdp.minRTT
	c.bdp.mu.Unlock()
	if minRTT != 0 {
		assert.GreaterOrEqual(t, minRTT, rtt/2, "the smallest round trip on a %v link", rtt)
	}
}

// probeSimDemand is probeSim with several streams, each under its share of
// the link's window (between the floor and MaxStreamWindow) and with a
// demand in bytes per probe (0: a bulk stream, limited by its window). It returns the bytes each
// stream had in flight in the last probe. every[i] > 1 makes stream i
// receive only in every every[i]-th probe.
func probeSimDemand(t *testing.T, demand []float64, every []int, rate float64, minRTT time.Duration, probes int) []float64 {
	t.Helper()
	c := &Conn{cfg: resolve(nil), helloRTT: minRTT}
	b := &c.bdp
	b.init(c)
	now := time.Unix(0, 0)
	bdp := rate * minRTT.Seconds()
	got := make([]float64, len(demand))
	for p := range probes {
		w := float64(min(max(b.floor, b.prev*shareUnit/b.shares.Load()), int64(c.cfg.MaxStreamWindow)))
		var total float64
		for i, d := range demand {
			got[i] = w
			if d > 0 {
				got[i] = min(d, w)
			}
			if every != nil && every[i] > 1 && p%every[i] != 0 {
				got[i] = 0
			}
			total += got[i]
		}
		rtt := minRTT
		if total > bdp {
			rtt = time.Duration(float64(minRTT) * total / bdp)
		}
		b.sentAt = now
		b.bytesAt = c.stats.streamBytesIn.Load()
		for i := range demand {
			if got[i] > 0 {
				b.active[uint32(i)] += int64(got[i])
			}
		}
		c.stats.streamBytesIn.Add(int64(total))
		now = now.Add(rtt)
		b.pong(now)
	}
	return got
}

// A stream that trickles (a frame or a few per round trip: a mostly idle
// disk stream next to a migration's memory stream) must not halve the bulk
// stream's window, which then drags the estimate down to the floor: on
// 1 Gbit/s, 40 ms that was 1 MiB per 40 ms, 210 Mbit/s.
func TestBulkStreamNextToATrickleKeepsTheLinksWindow(t *testing.T) {
	const rate, rtt = 125e6, 40 * time.Millisecond // BDP 5 MB
	bdp := rate * rtt.Seconds()
	for _, tr := range []float64{4 << 10, 64 << 10, 256 << 10} {
		got := probeSimDemand(t, []float64{0, tr}, nil, rate, rtt, 60)
		assert.InDelta(t, 1.25*bdp, got[0]+got[1], 0.15*bdp, "in flight, trickle of %v B per probe", tr)
		assert.Greater(t, got[0], 1.0*bdp, "bulk stream's window, trickle of %v B per probe", tr)
	}
	// a stream limited by its sender to half the link next to a bulk one
	got := probeSimDemand(t, []float64{0, bdp / 2}, nil, rate, rtt, 60)
	assert.InDelta(t, 1.25*bdp, got[0]+got[1], 0.15*bdp, "in flight, bulk next to a half-rate stream")
	assert.Greater(t, got[0], 0.6*bdp, "bulk next to a half-rate stream")
}

// MaxStreamWindow caps each stream, not the link: 4 streams on 10 Gbit/s,
// 40 ms (50 MB) together fill it (capped per link, they had 16 MiB in all,
// 3.4 Gbit/s; before streams shared, they had 4 × 16 MiB).
func TestMaxStreamWindowCapsEachStreamNotTheLink(t *testing.T) {
	const rate, rtt = 1.25e9, 40 * time.Millisecond
	bdp := rate * rtt.Seconds()
	got := probeSimDemand(t, make([]float64, 4), nil, rate, rtt, 80)
	assert.InDelta(t, 1.25*bdp, 4*got[0], 0.15*bdp, "4 streams in flight")
	got = probeSimDemand(t, make([]float64, 1), nil, rate, rtt, 80)
	assert.EqualValues(t, resolve(nil).MaxStreamWindow, got[0], "1 stream: capped")
}

// A peer coalesces the two pongs into one: probing resumes once the hold is
// over (it does not wait for a second pong forever).
func TestCoalescedPongDoesNotStopProbing(t *testing.T) {
	c := &Conn{cfg: resolve(nil), helloRTT: time.Millisecond}
	c.sched.init(c)
	c.sched.closing = true
	c.bdp.init(c)
	c.bdp.dataReceived(1, 1<<20)
	c.keepaliveTick(time.Now()) // tainted
	c.gotPong()                 // the only pong
	c.bdp.mu.Lock()
	assert.False(t, c.bdp.tainted)
	c.bdp.holdUntil = time.Now().Add(-time.Millisecond) // the hold is over
	c.bdp.mu.Unlock()
	time.Sleep(2 * bdpMinInterval)
	c.bdp.dataReceived(1, 64<<10)
	c.bdp.mu.Lock()
	defer c.bdp.mu.Unlock()
	assert.False(t, c.bdp.sentAt.IsZero(), "a probe is out again")
}
