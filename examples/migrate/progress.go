package main

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// progressEvery is how often the progress line is rewritten.
const progressEvery = 250 * time.Millisecond

// progress keeps one status line on w up to date, rewriting it in place
// with \r: bytes sent of the total, percent, rate, elapsed and remaining
// time.
type progress struct {
	w     io.Writer
	label string
	total int64
	sent  func() int64
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// startProgress starts drawing; sent reports the bytes sent so far. With a
// nil w it draws nothing.
func startProgress(w io.Writer, label string, total int64, sent func() int64) *progress {
	p := &progress{w: w, label: label, total: total, sent: sent, start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	if w == nil {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, p.line(), "\n")
				return
			case <-t.C:
				fmt.Fprint(p.w, p.line())
			}
		}
	}()
	return p
}

// Stop draws the line a last time, ends it, and returns once drawing stopped.
func (p *progress) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *progress) line() string {
	sent, elapsed := p.sent(), time.Since(p.start)
	rate := float64(sent) / elapsed.Seconds() // bytes per second
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(sent) / float64(p.total)
	}
	remaining := "?"
	if rate > 0 {
		remaining = fmtDur(time.Duration(float64(p.total-sent) / rate * 1e9))
	}
	s := fmt.Sprintf("%s %7.1f/%.1f MiB %5.1f%% %6.0f MB/s  elapsed %s  remaining %s",
		p.label, mib(sent), mib(p.total), pct, rate/1e6, fmtDur(elapsed), remaining)
	return fmt.Sprintf("\r%-80s", s) // pad to wipe a longer previous line
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func fmtDur(d time.Duration) string {
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// latencies collects the round-trip times of the control call.
type latencies struct {
	mu  sync.Mutex
	d   []time.Duration
	err error // the first failed call: the run fails with it
}

func (l *latencies) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

func (l *latencies) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// percentiles returns the p50 and p99 and the number of samples.
func (l *latencies) percentiles() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return d[(len(d)-1)*50/100], d[(len(d)-1)*99/100], len(d)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
