package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// rate is a -limit flag: a byteSize per second ("100MB", "1GiB/s").
type rate struct{ byteSize }

func (r *rate) Set(s string) error {
	return r.byteSize.Set(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
}

func (r *rate) String() string {
	if r.byteSize == 0 {
		return "none"
	}
	return r.byteSize.String() + "/s"
}

// newOutgoing is the source's migration of drv over conn, with the
// bandwidth limit of -limit.
func newOutgoing(conn *rpc.Conn, drv migrate.SourceDriver, cfg config) *migrate.Outgoing {
	return migrate.NewOutgoing(conn, drv, &migrate.OutgoingOptions{ID: guestName, Limit: cfg.limit})
}

// limitBySignal changes mig's bandwidth limit while it runs: SIGUSR1
// doubles it, SIGUSR2 halves it (without a limit, SIGUSR2 sets one at half
// the current rate). Each change is reported on w. stop ends it.
func limitBySignal(mig *migrate.Outgoing, w io.Writer) (stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sig := range ch {
			p := mig.Progress()
			limit := nextLimit(sig == syscall.SIGUSR1, p.Limit, p.Total.Rate)
			mig.SetLimit(limit)
			fmt.Fprintf(w, "\nlimit     %.1f MB/s\n", float64(limit)/1e6)
		}
	}()
	return func() { signal.Stop(ch); close(ch); <-done }
}

// The limits the signals move between: halving never reaches 0, which
// rpc/migrate takes for no limit, and doubling never overflows.
const minLimit, maxLimit int64 = 1 << 20, 1 << 40

// nextLimit is the limit after a SIGUSR1 (up) or SIGUSR2, from the limit in
// force (0: none) and the current rate.
func nextLimit(up bool, limit int64, rate float64) int64 {
	switch {
	case up && limit > 0:
		return min(limit*2, max(limit, maxLimit))
	case up:
		return 0
	case limit > 0:
		return max(limit/2, min(limit, minLimit))
	}
	return min(max(int64(rate/2), minLimit), maxLimit)
}

func progressOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
