package migrate

import (
	"sync"
	"sync/atomic"
	"time"
)

// Progress is a snapshot of a migration's data transfer, on either side.
type Progress struct {
	// Phase is the phase the migration is in.
	Phase Phase
	// Elapsed is the time since Perform began (the tunnel streams opened),
	// by the helper's monotonic clock; it stops when the last stream ends.
	// Rates in this snapshot are measured on the same clock.
	Elapsed time.Duration
	// Total sums the streams; its Size is 0 unless every stream's is known.
	Total StreamProgress
	// Streams are per stream, in the order of the migration's plan.
	Streams []StreamProgress
	// Limit is the bandwidth limit in force on the source, bytes per
	// second; 0 is none (always 0 on the destination).
	Limit int64
}

// StreamProgress is the progress of one stream, or of all of them.
type StreamProgress struct {
	Name string
	// Bytes is the data moved so far: read from the source's reader, or
	// written to the destination's writer. Holes of sparse streams are
	// not counted.
	Bytes int64
	// Size is the expected data size from the plan; 0 is unknown.
	Size int64
	// Rate is bytes per second over the last second (since the start
	// during the first second).
	Rate float64
	// Remaining is the estimated time left at Rate; 0 when Size is
	// unknown, the rate is zero, or the stream is done.
	Remaining time.Duration
	// Done reports that the stream has ended (successfully or not).
	Done bool
}

// sampleEvery is how often a meter samples its counters for rates.
const sampleEvery = 100 * time.Millisecond

// meter counts a migration's bytes per stream and derives rates.
type meter struct {
	names  []string
	sizes  []int64
	counts []atomic.Int64
	done   []atomic.Bool
	phase  atomic.Int32
	limit  func() int64

	mu      sync.Mutex
	started bool
	start   time.Time
	stopped time.Duration // Elapsed once stopped; 0 while running
	hist    []sample      // the last second, oldest first
}

type sample struct {
	at  time.Duration
	per []int64
}

func newMeter(streams []StreamInfo, limit func() int64) *meter {
	m := &meter{
		names:  make([]string, len(streams)),
		sizes:  make([]int64, len(streams)),
		counts: make([]atomic.Int64, len(streams)),
		done:   make([]atomic.Bool, len(streams)),
		limit:  limit,
	}
	for i, s := range streams {
		m.names[i], m.sizes[i] = s.Name, s.Size
	}
	return m
}

func (m *meter) setPhase(p Phase) { m.phase.Store(int32(p)) }

// begin starts the clock.
func (m *meter) begin() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		m.started, m.start = true, time.Now()
		m.hist = append(m.hist, sample{per: make([]int64, len(m.counts))})
	}
}

// stop freezes the clock.
func (m *meter) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started && m.stopped == 0 {
		m.stopped = max(time.Since(m.start), 1)
	}
}

func (m *meter) elapsedLocked() time.Duration {
	switch {
	case !m.started:
		return 0
	case m.stopped > 0:
		return m.stopped
	}
	return time.Since(m.start)
}

// sample records the counters for the rates; the ticker calls it.
func (m *meter) sample() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started || m.stopped > 0 {
		return
	}
	s := sample{at: m.elapsedLocked(), per: make([]int64, len(m.counts))}
	for i := range m.counts {
		s.per[i] = m.counts[i].Load()
	}
	m.hist = append(m.hist, s)
	for len(m.hist) > 2 && s.at-m.hist[1].at >= time.Second {
		m.hist = m.hist[1:]
	}
}

// snapshot returns the progress now.
func (m *meter) snapshot() Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := Progress{Phase: Phase(m.phase.Load()), Elapsed: m.elapsedLocked(), Streams: make([]StreamProgress, len(m.counts))}
	if m.limit != nil {
		p.Limit = m.limit()
	}
	var base sample
	if len(m.hist) > 0 {
		base = m.hist[0]
	}
	window := (p.Elapsed - base.at).Seconds()
	p.Total = StreamProgress{Name: "total", Done: true}
	sizesKnown := true
	var baseTotal int64
	for i := range m.counts {
		sp := StreamProgress{Name: m.names[i], Bytes: m.counts[i].Load(), Size: m.sizes[i], Done: m.done[i].Load()}
		var b int64
		if base.per != nil {
			b = base.per[i]
		}
		baseTotal += b
		if window > 0 && !sp.Done {
			sp.Rate = float64(sp.Bytes-b) / window
		}
		sp.Remaining = remaining(sp)
		p.Streams[i] = sp
		p.Total.Bytes += sp.Bytes
		p.Total.Size += sp.Size
		p.Total.Done = p.Total.Done && sp.Done
		sizesKnown = sizesKnown && sp.Size > 0
	}
	if !sizesKnown {
		p.Total.Size = 0
	}
	if window > 0 && !p.Total.Done {
		p.Total.Rate = float64(p.Total.Bytes-baseTotal) / window
	}
	p.Total.Remaining = remaining(p.Total)
	return p
}

func remaining(sp StreamProgress) time.Duration {
	if sp.Done || sp.Size <= 0 || sp.Rate <= 0 || sp.Bytes >= sp.Size {
		return 0
	}
	secs := float64(sp.Size-sp.Bytes) / sp.Rate
	if secs >= maxRemaining.Seconds() { // a float beyond int64 converts to anything
		return maxRemaining
	}
	return time.Duration(secs * float64(time.Second))
}

// maxRemaining is the longest remaining time reported: a century.
const maxRemaining = 100 * 365 * 24 * time.Hour

// report samples m every sampleEvery and calls fn (if not nil) every
// interval (default 1 s) until stop is called, then once more.
func (m *meter) report(fn func(Progress), interval time.Duration) (stop func()) {
	if interval <= 0 {
		interval = time.Second
	}
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(min(sampleEvery, interval))
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-quit:
				if fn != nil {
					fn(m.snapshot())
				}
				return
			case now := <-t.C:
				m.sample()
				if fn != nil && now.Sub(last) >= interval-time.Millisecond {
					last = now
					fn(m.snapshot())
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-exited }) }
}
