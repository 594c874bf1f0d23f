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
			limit := p.Limit
			switch {
			case sig == syscall.SIGUSR1 && limit > 0:
				limit *= 2
			case sig == syscall.SIGUSR2 && limit > 0:
				limit /= 2
			case sig == syscall.SIGUSR2:
				limit = max(int64(p.Total.Rate/2), 1<<20)
			}
			mig.SetLimit(limit)
			fmt.Fprintf(w, "\nlimit     %.1f MB/s\n", float64(limit)/1e6)
		}
	}()
	return func() { signal.Stop(ch); close(ch); <-done }
}

func progressOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
