package main

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// The emulated WAN: an in-process TCP relay between the client and the
// server of a case. Each direction is a link shared by every connection of
// a measurement (so 16 raw connections share one link, as they would share
// a path):
//
//	reader (one per connection) → bottleneck queue (bounded, bytes) →
//	pacer (token bucket at the link rate) → delay line (one per connection)
//	→ writer, which delivers each chunk `delay` after it left the pacer.
//
// Nothing is dropped: when the queue is full the reader stops reading and
// TCP's own flow control pushes back on the sender, over a loopback hop
// with no real delay. So what a protocol gets through depends on its own
// windows versus rate × round trip, which is what this emulation is for.
// The relay's sockets have 256 KiB send and receive buffers so the kernel
// does not add a large hidden queue in front of the bottleneck one.

type wanParams struct {
	delay time.Duration // each way
	rate  float64       // bytes per second
	queue int           // bottleneck queue, bytes
}

const (
	relayRead    = 64 << 10
	relaySockBuf = 256 << 10
	// pacerBurst is how far the token bucket may run ahead after the pacer
	// overslept (Go timers wake up to ~1 ms late).
	pacerBurst = 2 * time.Millisecond
)

// relayFree is the relay's buffer free list. Unlike a sync.Pool it is not
// emptied by the GC, so after warm-up the relay allocates nothing and the
// alloc column of the @wan cases is the endpoints' own.
var relayFree = make(chan *[]byte, 1024)

func getRelayBuf() *[]byte {
	select {
	case b := <-relayFree:
		return b
	default:
		b := make([]byte, relayRead)
		return &b
	}
}

func putRelayBuf(b *[]byte) {
	select {
	case relayFree <- b:
	default:
	}
}

// warmRelay fills the free list with enough buffers for both directions'
// queues and delay lines at the link rate.
func warmRelay(p wanParams) {
	n := 2 * (p.queue + int(p.rate*p.delay.Seconds())) / relayRead
	for range min(n+32, cap(relayFree)) - len(relayFree) {
		b := make([]byte, relayRead)
		putRelayBuf(&b)
	}
}

type packet struct {
	buf     *[]byte
	n       int // 0: end of stream
	out     chan packet
	deliver time.Time
	link    *link
}

// link is one direction of the path.
type link struct {
	p      wanParams
	in     chan packet
	done   chan struct{}
	mu     sync.Mutex
	space  sync.Cond
	queued int
}

func newLink(p wanParams) *link {
	l := &link{p: p, in: make(chan packet, 1<<14), done: make(chan struct{})}
	l.space.L = &l.mu
	go l.pace()
	return l
}

// enqueue waits for room in the bottleneck queue.
func (l *link) enqueue(pk packet) bool {
	l.mu.Lock()
	for l.queued > 0 && l.queued+pk.n > l.p.queue {
		select {
		case <-l.done:
			l.mu.Unlock()
			return false
		default:
		}
		l.space.Wait()
	}
	l.queued += pk.n
	l.mu.Unlock()
	select {
	case l.in <- pk:
		return true
	case <-l.done:
		return false
	}
}

func (l *link) pace() {
	next := time.Now()
	for {
		var pk packet
		select {
		case pk = <-l.in:
		case <-l.done:
			return
		}
		now := time.Now()
		if floor := now.Add(-pacerBurst); next.Before(floor) {
			next = floor
		}
		next = next.Add(time.Duration(float64(pk.n) / l.p.rate * 1e9))
		if d := next.Sub(now); d > 0 {
			time.Sleep(d)
		}
		l.mu.Lock()
		l.queued -= pk.n
		l.space.Broadcast()
		l.mu.Unlock()
		pk.deliver = time.Now().Add(l.p.delay)
		select {
		case pk.out <- pk:
		case <-l.done:
			return
		}
	}
}

func (l *link) stop() {
	close(l.done)
	l.mu.Lock()
	l.space.Broadcast()
	l.mu.Unlock()
}

// wan is the two links of one measurement.
type wan struct{ up, down *link }

func newWAN(p wanParams) *wan { return &wan{up: newLink(p), down: newLink(p)} }

func (w *wan) stop() {
	w.up.stop()
	w.down.stop()
}

// relay forwards every connection accepted on its listener to target over
// the wan's links.
type relay struct {
	ln     net.Listener
	target string
	w      *wan
	mu     sync.Mutex
	conns  []net.Conn
}

func sockBufs(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, relaySockBuf); serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, relaySockBuf)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func newRelay(ctx context.Context, target string, w *wan) (*relay, error) {
	lc := net.ListenConfig{Control: sockBufs}
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, w: w}
	go r.acceptLoop()
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) track(c net.Conn) {
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
}

func (r *relay) acceptLoop() {
	for {
		a, err := r.ln.Accept()
		if err != nil {
			return
		}
		d := net.Dialer{Control: sockBufs}
		b, err := d.Dial("tcp", r.target)
		if err != nil {
			a.Close()
			continue
		}
		a.(*net.TCPConn).SetNoDelay(true)
		b.(*net.TCPConn).SetNoDelay(true)
		r.track(a)
		r.track(b)
		go forward(a, b, r.w.up)
		go forward(b, a, r.w.down)
	}
}

// forward carries src's bytes to dst over l.
func forward(src, dst net.Conn, l *link) {
	out := make(chan packet, 1<<14)
	go deliver(dst, out, l.done)
	for {
		buf := getRelayBuf()
		n, err := src.Read(*buf)
		if n > 0 {
			if !l.enqueue(packet{buf: buf, n: n, out: out, link: l}) {
				return
			}
		} else {
			putRelayBuf(buf)
		}
		if err != nil {
			l.enqueue(packet{out: out, link: l}) // end of stream, after the data
			return
		}
	}
}

// deliver writes each packet to dst once its delay has passed. After a
// failed write it goes on taking packets (so the pacer never waits for a
// dead connection) until the link stops.
func deliver(dst net.Conn, out chan packet, done <-chan struct{}) {
	failed := false
	for {
		var pk packet
		select {
		case pk = <-out:
		case <-done:
			return
		}
		if pk.n == 0 {
			if tc, ok := dst.(*net.TCPConn); ok && !failed {
				time.Sleep(time.Until(pk.deliver))
				_ = tc.CloseWrite()
			}
			continue
		}
		if !failed {
			time.Sleep(time.Until(pk.deliver))
			if _, err := dst.Write((*pk.buf)[:pk.n]); err != nil {
				failed = true
			}
		}
		putRelayBuf(pk.buf)
	}
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
}
