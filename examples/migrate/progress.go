package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// How often the progress line is drawn: redrawn in place on a terminal,
// one line per second otherwise (a log, a pipe, a CI job).
const (
	redrawEvery = 250 * time.Millisecond
	logEvery    = time.Second
)

// progress keeps the transfer's status on w: bytes sent of the total,
// percent, rate, elapsed and remaining time. On a terminal the line is
// rewritten in place with \r; otherwise one full line is written per
// second.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	sent  func() (sent, total int64)
	start time.Time
	stop  chan struct{}
	once  sync.Once // closes stop
	done  chan struct{}
}

// startProgress starts drawing; sent reports the bytes sent so far and the
// total expected (an estimate that may change, 0 if unknown). With a nil w
// it draws nothing.
func startProgress(w io.Writer, label string, sent func() (int64, int64)) *progress {
	p := newProgress(w, isTerminal(w), label, sent)
	if w == nil {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		every := logEvery
		if p.tty {
			every = redrawEvery
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw(true)
				return
			case <-t.C:
				p.draw(false)
			}
		}
	}()
	return p
}

func newProgress(w io.Writer, tty bool, label string, sent func() (int64, int64)) *progress {
	return &progress{w: w, tty: tty, label: label, sent: sent, start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Stop draws the line a last time, ends it, and returns once drawing stopped.
func (p *progress) Stop() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

// draw writes the line once; last ends a terminal's line.
func (p *progress) draw(last bool) {
	switch {
	case !p.tty:
		fmt.Fprintln(p.w, p.line())
	case last:
		fmt.Fprintf(p.w, "\r%-80s\n", p.line()) // pad to wipe a longer previous line
	default:
		fmt.Fprintf(p.w, "\r%-80s", p.line())
	}
}

func (p *progress) line() string {
	sent, total := p.sent()
	elapsed := time.Since(p.start)
	rate := float64(sent) / elapsed.Seconds() // bytes per second
	pct, remaining := "", "?"
	if total > 0 {
		pct = fmt.Sprintf(" %5.1f%%", 100*float64(sent)/float64(total))
		if rate > 0 {
			remaining = fmtDur(time.Duration(float64(max(total-sent, 0)) / rate * 1e9))
		}
	}
	return fmt.Sprintf("%s %7.1f/%.1f MiB%s %6.0f MB/s  elapsed %s  remaining %s",
		p.label, mib(sent), mib(total), pct, rate/1e6, fmtDur(elapsed), remaining)
}

// fixedTotal is a progress source whose total is known in advance.
func fixedTotal(total int64, sent func() int64) func() (int64, int64) {
	return func() (int64, int64) { return sent(), total }
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
