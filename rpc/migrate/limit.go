package migrate

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket shared by all streams of a migration: the
// source's pumps take tokens for every byte they read, so the migration as a
// whole moves at most rate bytes per second. Tokens may go negative (a read
// larger than the bucket is taken whole); the reader then waits until the
// debt is refilled. A new rate applies at once, to the debt too.
type bucket struct {
	mu      sync.Mutex
	rate    int64 // bytes per second; 0 is unlimited
	tokens  float64
	last    time.Time
	changed chan struct{} // closed and replaced when the rate changes

	// idle counts the tokens dropped at the burst cap from the first take
	// on: rate the source left unused because its readers, its streams or
	// their goroutines' wake-ups were slower than the limit (the machine,
	// not the limiter). Every token refilled is either taken (moved),
	// dropped (idle) or still in the bucket (at most the burst, or a debt
	// of one read per stream), so moved plus idle over a time is the rate
	// the limiter granted.
	idle    float64
	started bool
}

// burstTime is how much traffic the bucket holds: 50 ms at the rate.
const burstTime = 50 * time.Millisecond

func newBucket(rate int64) *bucket {
	return &bucket{rate: max(rate, 0), last: time.Now(), changed: make(chan struct{})}
}

// Limit returns the rate in force.
func (b *bucket) Limit() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate
}

// setLimit changes the rate; waiters recompute their wait at once.
func (b *bucket) setLimit(rate int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(time.Now())
	b.rate = max(rate, 0)
	if b.rate == 0 {
		b.tokens = 0
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *bucket) refillLocked(now time.Time) {
	if b.rate > 0 {
		b.tokens += now.Sub(b.last).Seconds() * float64(b.rate)
		if burst := float64(b.rate) * burstTime.Seconds(); b.tokens > burst {
			if b.started {
				b.idle += b.tokens - burst
			}
			b.tokens = burst
		}
	}
	b.last = now
}

// take takes n tokens and waits until the bucket is out of debt, or ctx
// ends.
func (b *bucket) take(ctx context.Context, n int) error {
	b.mu.Lock()
	b.refillLocked(time.Now())
	b.started = true
	if b.rate == 0 {
		b.mu.Unlock()
		return nil
	}
	b.tokens -= float64(n)
	for {
		if b.rate == 0 || b.tokens >= 0 {
			b.mu.Unlock()
			return nil
		}
		wait := time.Duration(-b.tokens / float64(b.rate) * float64(time.Second))
		changed := b.changed
		b.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		b.mu.Lock()
		b.refillLocked(time.Now())
	}
}

// idleBytes returns the tokens the limit granted that the source has not
// taken: those dropped at the cap (idle) and those in the bucket now
// (negative while a debt is being waited out). Moved plus idleBytes, over
// any time, is what the limit granted, short of the reads being waited on.
func (b *bucket) idleBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return 0
	}
	b.refillLocked(time.Now())
	return int64(b.idle + b.tokens)
}
