package migrate_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// zeros is an endless source of zero bytes, cut to size by io.LimitReader.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sampler records the progress reports of a migration.
type sampler struct {
	mu      sync.Mutex
	samples []migrate.Progress
	hook    func(p migrate.Progress) // runs on every report
}

func (s *sampler) onProgress(p migrate.Progress) {
	s.mu.Lock()
	s.samples = append(s.samples, p)
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		hook(p)
	}
}

// rate is the bytes per second between the last samples at or before from
// and at or after to, by the helper's own clock (Progress.Elapsed).
func (s *sampler) rate(t *testing.T, from, to time.Duration) float64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &migrate.Progress{} // the start: nothing moved at 0
	var b *migrate.Progress
	for i := range s.samples {
		p := &s.samples[i]
		if p.Elapsed <= from {
			a = p
		}
		if p.Elapsed >= to && b == nil {
			b = p
		}
	}
	require.NotNil(t, a, "no sample before %v", from)
	require.NotNil(t, b, "no sample after %v", to)
	return float64(b.Total.Bytes-a.Total.Bytes) / (b.Elapsed - a.Elapsed).Seconds()
}

// limitedRun migrates size zero bytes in two streams under limit and
// returns the samples and the final progress.
func limitedRun(t *testing.T, size int64, limit int64, hook func(*migrate.Outgoing, migrate.Progress)) (*sampler, migrate.Progress) {
	t.Helper()
	half := size / 2
	src := &srcDriver{
		plan: migrate.Plan{Streams: []migrate.StreamInfo{{Name: "main", Size: half}, {Name: "multifd-1", Size: size - half}}},
		perform: func(context.Context, []byte) ([]io.Reader, error) {
			return []io.Reader{io.LimitReader(zeros{}, half), io.LimitReader(zeros{}, size-half)}, nil
		},
	}
	dst := &dstDriver{sinks: func(*migrate.Incoming) []io.Writer { return []io.Writer{io.Discard, io.Discard} }}
	l := newLink(t, dst, nil, false)
	s := &sampler{}
	out := migrate.NewOutgoing(l.src, src, &migrate.OutgoingOptions{
		Limit: limit, OnProgress: s.onProgress, ProgressInterval: 100 * time.Millisecond})
	if hook != nil {
		s.hook = func(p migrate.Progress) { hook(out, p) }
	}
	require.NoError(t, out.Run(context.Background()))
	return s, out.Progress()
}

func within(t *testing.T, got, want, tolerance float64, what string) {
	t.Helper()
	t.Logf("%s: %.2f MB/s (limit %.0f MB/s)", what, got/1e6, want/1e6)
	assert.InEpsilon(t, want, got, tolerance, "%s: %.1f MB/s, want %.1f MB/s ±%.0f%%", what, got/1e6, want/1e6, tolerance*100)
}

// A 50 MB/s limit holds within 10% over a 256 MiB transfer, and no second
// of it goes above, by the helper's own clock (10 MB/s over 48 MiB under the
// race detector).
func TestLimitHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5 s transfer")
	}
	const limit = limitRate
	s, p := limitedRun(t, limitSize, limit, nil)
	require.Equal(t, int64(limitSize), p.Total.Bytes)
	within(t, float64(p.Total.Bytes)/p.Elapsed.Seconds(), limit, 0.10, "whole transfer")
	// No second runs above the limit. (A second below it is the machine's
	// doing, not the limiter's, on two shared cores: logged, not failed.)
	for from := 200 * time.Millisecond; from+time.Second < p.Elapsed-200*time.Millisecond; from += time.Second {
		r := s.rate(t, from, from+time.Second)
		t.Logf("second from %v: %.2f MB/s", from, r/1e6)
		assert.LessOrEqual(t, r, limit*1.10, "second from %v above the limit", from)
	}
	assert.Equal(t, int64(limit), p.Limit)
}

// A limit changed mid-transfer takes effect within a second (the rate is
// at most the new limit from a second after the change): down from
// 40 MB/s to 15 MB/s once a second has passed, by the helper's clock (10
// to 4 MB/s under the race detector).
func TestLimitChangedMidTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5 s transfer")
	}
	const before, after = changeBefore, changeAfter
	var once sync.Once
	var changedAt time.Duration
	s, p := limitedRun(t, changeSize, before, func(o *migrate.Outgoing, p migrate.Progress) {
		if p.Elapsed >= time.Second {
			once.Do(func() {
				o.SetLimit(after)
				changedAt = o.Progress().Elapsed
			})
		}
	})
	require.NotZero(t, changedAt, "the limit was never changed")
	within(t, s.rate(t, 200*time.Millisecond, changedAt-100*time.Millisecond), before, 0.10, "before the change")
	// The lower limit holds from a second after the change on: no window
	// runs above it. (Below it is the machine's doing on two shared cores,
	// so the lower bound is only that the transfer went on.)
	for _, w := range [][2]time.Duration{{changedAt + time.Second, changedAt + 2*time.Second}, {changedAt + time.Second, p.Elapsed - 100*time.Millisecond}} {
		r := s.rate(t, w[0], w[1])
		t.Logf("from %v to %v after the start: %.2f MB/s (new limit %.0f MB/s)", w[0].Round(time.Millisecond), w[1].Round(time.Millisecond), r/1e6, after/1e6)
		assert.LessOrEqual(t, r, after*1.10, "above the new limit from %v", w[0])
		assert.Greater(t, r, after*0.5, "the transfer stalled from %v", w[0])
	}
	assert.Equal(t, int64(after), p.Limit)
}
