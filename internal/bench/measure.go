package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

// chunkPayload is the bytes a sender hands over per write: four of
// virtrpc's 64 KiB frame payloads (4 × 65508, just under 256 KiB), so a
// Write of one chunk on a virtrpc stream makes four full frames and no
// sliver frame; every case writes the same chunks.
const chunkPayload = 4 * frame.AlignedStreamPayload

// headroom is free space in front of every chunk's payload, which the raw
// cases use for their frame header so a frame is written with one Write.
const headroom = 8

// chunk is one sender's write: payload buf[headroom:].
type chunk struct{ buf []byte }

func (c chunk) payload() []byte { return c.buf[headroom:] }

func newChunk() chunk {
	b := make([]byte, headroom+chunkPayload)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return chunk{buf: b}
}

// session is one client–server connection of a case, both ends in this
// process.
type session interface {
	// open starts bulk stream id toward the server, whose side drains it
	// into rc and calls rc.finish once the stream ended.
	open(id int, rc *counter) (sender, error)
	// ping makes one small round trip on the same connection; errNoPing
	// if the case has no second channel.
	ping(ctx context.Context) error
	close()
}

// sender is the client end of one bulk stream.
type sender interface {
	send(c chunk) error
	// close marks the end of the data (and for virtrpc waits for the
	// receiver's verdict).
	close() error
}

var errNoPing = errors.New("no ping")

// benchCase is one row of the table.
type benchCase struct {
	name string
	// muxed: many streams share one connection. Otherwise (raw cases)
	// every stream gets its own connection.
	muxed   bool
	connect func(ctx context.Context, e *env) (session, error)
}

// counter is the receive side of one stream: it counts bytes and stops the
// measurement once all streams together reached the target.
type counter struct {
	n    atomic.Int64
	m    *measurement
	err  error
	once sync.Once
}

func (c *counter) Write(p []byte) (int, error) {
	c.add(len(p))
	return len(p), nil
}

func (c *counter) add(n int) {
	c.n.Add(int64(n))
	if c.m.total.Add(int64(n)) >= c.m.target && !c.m.stopped.Load() {
		c.m.stop()
	}
}

// finish records that the stream's receiver is done.
func (c *counter) finish(err error) {
	c.once.Do(func() {
		c.err = err
		c.m.recvWG.Done()
	})
}

// drain reads r to its end into rc, with WriterTo when r has it (what
// io.Copy would do).
func drain(r io.Reader, rc *counter) error {
	if wt, ok := r.(io.WriterTo); ok {
		_, err := wt.WriteTo(rc)
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		rc.add(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// measurement is one transfer of one case.
type measurement struct {
	target   int64
	total    atomic.Int64
	stopped  atomic.Bool
	stopOnce sync.Once
	stopped2 chan struct{}
	t0       time.Time
	tStop    time.Time
	atStop   []int64
	counters []*counter
	recvWG   sync.WaitGroup
}

func (m *measurement) stop() {
	m.stopOnce.Do(func() {
		m.tStop = time.Now()
		m.atStop = make([]int64, len(m.counters))
		for i, c := range m.counters {
			m.atStop[i] = c.n.Load()
		}
		m.stopped.Store(true)
		close(m.stopped2)
	})
}

// result is what one measurement yields.
type result struct {
	mbps        float64
	cpuPerGiB   float64
	allocPerGiB float64 // MB (1e6 bytes) allocated per GiB moved
	p50, p99    float64 // µs; NaN when the case has no ping
	share       float64 // slowest stream's bytes / fair share
	bytes       int64
	run         int // which run it came from (set by the caller)
}

type usage struct {
	cpu   time.Duration
	alloc uint64
}

func readUsage() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return usage{cpu: cpu, alloc: ms.TotalAlloc}
}

// measureOpts say how to run one transfer.
type measureOpts struct {
	streams   int
	size      int64
	maxTime   time.Duration
	pingEvery time.Duration // 0: no pings
}

// measure runs one transfer of bc: n streams (on one connection if bc is
// muxed, else one connection each) until size bytes arrived in total or
// maxTime passed.
func measure(ctx context.Context, e *env, bc benchCase, o measureOpts) (res result, err error) {
	m := &measurement{target: o.size, stopped2: make(chan struct{})}
	var sessions []session
	defer func() {
		for _, s := range sessions {
			s.close()
		}
		e.cleanup()
	}()
	for i := 0; i < o.streams && (bc.muxed && i == 0 || !bc.muxed); i++ {
		s, err := bc.connect(ctx, e)
		if err != nil {
			return res, fmt.Errorf("%s: connect: %w", bc.name, err)
		}
		sessions = append(sessions, s)
	}
	m.counters = make([]*counter, o.streams)
	senders := make([]sender, o.streams)
	for i := range o.streams {
		m.counters[i] = &counter{m: m}
		m.recvWG.Add(1)
		s := sessions[0]
		if !bc.muxed {
			s = sessions[i]
		}
		snd, err := s.open(i, m.counters[i])
		if err != nil {
			return res, fmt.Errorf("%s: open stream %d: %w", bc.name, i, err)
		}
		senders[i] = snd
	}

	runtime.GC()
	u0 := readUsage()
	m.t0 = time.Now()
	timer := time.AfterFunc(o.maxTime, m.stop)
	defer timer.Stop()

	var lat []time.Duration
	var pingErr error
	pingDone := make(chan struct{})
	if o.pingEvery > 0 {
		// A ping sent just after the stop may never be answered (a raw
		// server stops reading at the end frame): give up on it once
		// every receiver is done.
		pctx, cancel := context.WithCancel(ctx)
		go func() {
			m.recvWG.Wait()
			cancel()
		}()
		go func() {
			defer close(pingDone)
			lat, pingErr = pinger(pctx, sessions[0], o.pingEvery, m.stopped2)
		}()
	} else {
		close(pingDone)
	}
	sendErrs := make([]error, o.streams)
	var sendWG sync.WaitGroup
	for i, snd := range senders {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			c := newChunk()
			for !m.stopped.Load() {
				if err := snd.send(c); err != nil {
					sendErrs[i] = err
					m.stop()
					break
				}
			}
			if err := snd.close(); err != nil && sendErrs[i] == nil {
				sendErrs[i] = fmt.Errorf("close: %w", err)
			}
		}()
	}
	allDone := make(chan struct{})
	go func() {
		sendWG.Wait()
		m.recvWG.Wait()
		<-pingDone
		close(allDone)
	}()
	select {
	case <-allDone:
	case <-time.After(o.maxTime + 30*time.Second):
		return res, fmt.Errorf("%s: transfer did not end (moved %d bytes)", bc.name, m.total.Load())
	}
	u1 := readUsage()
	for i, err := range sendErrs {
		if err != nil {
			return res, fmt.Errorf("%s: stream %d send: %w", bc.name, i, err)
		}
	}
	for i, c := range m.counters {
		if c.err != nil {
			return res, fmt.Errorf("%s: stream %d receive: %w", bc.name, i, c.err)
		}
	}
	if pingErr != nil && !errors.Is(pingErr, errNoPing) {
		return res, fmt.Errorf("%s: ping: %w", bc.name, pingErr)
	}

	var atStop int64
	minShare := int64(math.MaxInt64)
	for _, n := range m.atStop {
		atStop += n
		minShare = min(minShare, n)
	}
	total := m.total.Load()
	gib := float64(total) / (1 << 30)
	res = result{
		mbps:        float64(atStop) / m.tStop.Sub(m.t0).Seconds() / 1e6,
		cpuPerGiB:   (u1.cpu - u0.cpu).Seconds() / gib,
		allocPerGiB: float64(u1.alloc-u0.alloc) / 1e6 / gib,
		p50:         math.NaN(),
		p99:         math.NaN(),
		share:       float64(minShare) / (float64(atStop) / float64(o.streams)),
		bytes:       total,
	}
	if len(lat) > 0 {
		res.p50 = percentile(lat, 0.50)
		res.p99 = percentile(lat, 0.99)
	}
	return res, nil
}

// pinger makes a round trip every interval until stop, and returns the
// round-trip times.
func pinger(ctx context.Context, s session, every time.Duration, stop <-chan struct{}) ([]time.Duration, error) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lat []time.Duration
	for {
		select {
		case <-stop:
			return lat, nil
		case <-tick.C:
		}
		t0 := time.Now()
		if err := s.ping(ctx); err != nil {
			select {
			case <-stop:
				return lat, nil
			default:
			}
			return lat, err
		}
		lat = append(lat, time.Since(t0))
	}
}

// percentile returns the q-quantile of d in µs (nearest rank).
func percentile(d []time.Duration, q float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i].Nanoseconds()) / 1e3
}
