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
