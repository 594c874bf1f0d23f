package rpc

import (
	"math"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

// sendKeepalive queues a PING or PONG ahead of everything else. Pongs are
// queued straight from the read loop, so they never wait behind bulk data
// for more than the frame being written.
func (c *Conn) sendKeepalive(proc int32, direct bool) {
	var b [frame.KeepaliveSize]byte
	frame.PutKeepalive(b[:], proc)
	if proc == frame.KeepalivePong {
		c.sched.sendPong(b[:]) // one queued PONG answers a burst of pings
		return
	}
	c.sched.sendControl(b[:], direct)
}

func (c *Conn) gotPong() {
	now := time.Now()
	c.bdp.pong(now)
	if sent := c.stats.pingSent.Swap(0); sent != 0 {
		c.noteRTT(now.Sub(time.Unix(0, sent)))
	}
}

// keepalive pings after an interval of silence and declares the peer dead
// after interval × (count + 1) without receiving anything, as libvirt does,
// and not before a ping has gone unanswered for an interval, nor while the
// peer keeps taking what we write (sendProgress).
// It also reaps a peer that crawls through a message (slowCheck) or
// leaves its replies unread (stallCheck); either job may be disabled.
func (c *Conn) keepalive() {
	defer c.loops.Done()
	interval := c.cfg.KeepaliveInterval
	deadAfter := interval * time.Duration(c.cfg.KeepaliveCount+1)
	period := time.Duration(math.MaxInt64)
	if interval > 0 {
		period = interval / 4
	}
	if c.cfg.MessageTimeout > 0 {
		period = min(period, c.cfg.MessageTimeout/4)
	}
	tick := time.NewTicker(max(period, time.Millisecond))
	defer tick.Stop()
	var lastPing time.Time
	var sent sendProgress
	var slow slowCheck
	var stall stallCheck
	var sock sockCheck
	for {
		select {
		case <-c.done:
			return
		case now := <-tick.C:
			if c.cfg.MessageTimeout > 0 {
				if err := slow.check(c, now); err != nil {
					c.closeWith(err)
					return
				}
				if err := stall.check(c, now); err != nil {
					c.closeWith(err)
					return
				}
				if err := sock.check(c, now); err != nil {
					c.closeWith(err)
					return
				}
			}
			if interval <= 0 {
				continue
			}
			// While our read loop is paused (a compat stream's reader is
			// behind) the silence is ours, not the peer's; we still ping so
			// the peer knows we live. A peer silent mid-message is
			// slowCheck's. routing is loaded before lastRecv, which the
			// read loop stores before it clears routing: a read loop seen
			// idle has its last message's time in lastRecv, not the time
			// of the one before a pause that just ended.
			// The peer is dead only once it was asked: a ping of ours
			// since its last message has gone unanswered for an
			// interval. Without this, a tick late by deadAfter (our
			// process starved, stopped, or a loaded machine) would close
			// a live peer that was never pinged; libvirt too counts
			// unanswered pings, not time alone.
			// A peer whose pong waits behind the megabytes we are
			// streaming to it is reading them: while what we write keeps
			// going out, it is alive (see sendProgress).
			routing := c.routing.Load()
			recv := c.lastRecv.Load()
			idle := now.Sub(time.Unix(0, recv))
			asked := !lastPing.IsZero() && lastPing.UnixNano() > recv && now.Sub(lastPing) >= interval
			reading := now.Sub(sent.update(c, now)) < deadAfter
			if idle >= deadAfter && !routing && asked && !reading {
				c.closeWith(ErrKeepaliveTimeout)
				return
			}
			if idle >= interval && now.Sub(lastPing) >= interval {
				lastPing = now
				c.keepaliveTick(now)
			}
		}
	}
}

// keepaliveTick sends the keepalive's PING. A ping already unanswered may
// be a bandwidth probe's: its pong and ours cannot be told apart.
func (c *Conn) keepaliveTick(now time.Time) {
	if !c.stats.pingSent.CompareAndSwap(0, now.UnixNano()) {
		c.bdp.keepalivePing()
	}
	c.sendKeepalive(frame.KeepalivePing, false) // never block the timer on a write
	c.stats.pingsOut.Add(1)
}

// keepaliveProgress is how far our writes must advance for keepalive to
// count them as the peer's sign of life: a frame, far more than the pings
// and pongs a dead peer's kernel would still take in.
const keepaliveProgress = 64 << 10

// sendProgress tracks when our writes last advanced by keepaliveProgress.
// A peer that only receives (a download, a migration destination) sends
// nothing but pongs, and its pong to our ping arrives only after it has
// read all the data queued ahead of it, which on a loaded machine or a
// slow link can take longer than the keepalive deadline. Writes that keep
// going out mean the peer keeps reading: one that stops (dead, hung, or
// never reading) fills the socket buffers, our writes stop, and the
// deadline runs from then.
type sendProgress struct {
	mark int64
	at   time.Time
}

// update returns when the writes last advanced: the bytes the peer's TCP
// acknowledged where the kernel says (a large Write blocked on a slow
// reader advances bit by bit), else the bytes we wrote (bytesOut counts a
// Write whole when it starts, so there a Write that takes longer than the
// deadline to go out is not seen to advance).
func (p *sendProgress) update(c *Conn, now time.Time) time.Time {
	out := c.stats.bytesOut.Load()
	if c.acked != nil {
		if n, ok := c.acked(); ok {
			out = n
		}
	}
	if out-p.mark >= keepaliveProgress {
		p.mark, p.at = out, now
	}
	return p.at
}
