package migrate

import "time"

// IdleLimit returns the bytes the bandwidth limit granted that o's source
// has not taken (its readers or streams were slower than the limit): the
// limit tests tell the machine's shortfall from the limiter's with it.
func IdleLimit(o *Outgoing) int64 { return o.limit.idleBytes() }

// Remaining is the remaining-time estimate of sp.
func Remaining(sp StreamProgress) time.Duration { return remaining(sp) }
