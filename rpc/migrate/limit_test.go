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
	out     *migrate.Outgoing
	samples []migrate.Progress
	idle    []int64                  // migrate.IdleLimit at each sample
	hook    func(p migrate.Progress) // runs on every report
}

func (s *sampler) onProgress(p migrate.Progress) {
	s.mu.Lock()
	s.samples = append(s.samples, p)
	s.idle = append(s.idle, migrate.IdleLimit(s.out))
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		hook(p)
	}
}

// rate is the bytes per second between the last samples at or before from
// and at or after to, by the helper's own clock (Progress.Elapsed); granted
// adds the rate the limit allowed that the source left unused (the
// machine's shortfall on two shared cores, not the limiter's).
func (s *sampler) rate(t *testing.T, from, to time.Duration) (moved, granted float64) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := -1, -1 // -1 for a: the start, nothing moved at 0
	for i := range s.samples {
		if s.samples[i].Elapsed <= from {
			a = i
		}
		if s.samples[i].Elapsed >= to && b < 0 {
			b = i
		}
	}
	require.GreaterOrEqual(t, b, 0, "no sample after %v", to)
	var pa migrate.Progress
	var ia int64
	if a >= 0 {
		pa, ia = s.samples[a], s.idle[a]
	}
	pb, ib := s.samples[b], s.idle[b]
	secs := (pb.Elapsed - pa.Elapsed).Seconds()
	moved = float64(pb.Total.Bytes-pa.Total.Bytes) / secs
	return moved, moved + float64(ib-ia)/secs
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
	s.out = out
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
// race detector). Within 10% from below counts the rate the limiter allowed
// and the source left unused (migrate.IdleLimit): on two shared cores the
// machine can fall behind 50 MB/s, and that is not the limiter's doing (it
// failed so once under -race with the load average at 9).
func TestLimitHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5 s transfer")
	}
	const limit = limitRate
	s, p := limitedRun(t, limitSize, limit, nil)
	require.Equal(t, int64(limitSize), p.Total.Bytes)
	// From the start to the last report, made as the streams ended.
	moved, granted := s.rate(t, 0, p.Elapsed)
	t.Logf("whole transfer: %.2f MB/s moved, %.2f MB/s allowed", moved/1e6, granted/1e6)
	assert.LessOrEqual(t, moved, limit*1.10, "whole transfer above the limit")
	within(t, granted, limit, 0.10, "whole transfer, moved plus allowed and unused")
	// No second runs above the limit. (A second below it is the machine's
	// doing, not the limiter's, on two shared cores: logged, not failed.)
	for from := 200 * time.Millisecond; from+time.Second < p.Elapsed-200*time.Millisecond; from += time.Second {
		r, g := s.rate(t, from, from+time.Second)
		t.Logf("second from %v: %.2f MB/s (%.2f MB/s allowed)", from, r/1e6, g/1e6)
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
	r, g := s.rate(t, 200*time.Millisecond, changedAt-100*time.Millisecond)
	assert.LessOrEqual(t, r, before*1.10, "above the limit before the change")
	within(t, g, before, 0.10, "before the change, moved plus allowed and unused")
	// The lower limit holds from a second after the change on: no window
	// runs above it. (Below it is the machine's doing on two shared cores,
	// so the lower bound is only that the transfer went on.)
	for _, w := range [][2]time.Duration{{changedAt + time.Second, changedAt + 2*time.Second}, {changedAt + time.Second, p.Elapsed - 100*time.Millisecond}} {
		r, g := s.rate(t, w[0], w[1])
		t.Logf("from %v to %v after the start: %.2f MB/s (new limit %.0f MB/s)", w[0].Round(time.Millisecond), w[1].Round(time.Millisecond), r/1e6, after/1e6)
		assert.LessOrEqual(t, r, after*1.10, "above the new limit from %v", w[0])
		assert.Greater(t, g, after*0.5, "the limiter stalled the transfer from %v", w[0])
	}
	assert.Equal(t, int64(after), p.Limit)
}
