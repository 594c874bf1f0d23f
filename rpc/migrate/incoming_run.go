package migrate

import (
	"context"
	"fmt"
	"time"
)

// run is the destination's phase machine for one migration: Prepare, the
// streams (Perform), Finish, then the source's Confirm. Every hook of the
// driver is called from here, so the driver sees one call at a time.
func (in *Incoming) run() {
	defer in.end()
	drv := in.r.drv
	in.setPhase(Prepare)
	cookie, sinks, err := drv.Prepare(in.ctx, in)
	if err != nil {
		in.prepared <- prepareResult{err: in.fail(classify(Prepare, Destination, err))}
		return
	}
	if len(sinks) != len(in.Streams) {
		e := in.fail(&Error{Phase: Prepare, Side: Destination,
			Err: fmt.Errorf("the driver's Prepare returned %d writers for %d streams", len(sinks), len(in.Streams))})
		in.prepared <- prepareResult{err: e}
		in.cleanup(e)
		return
	}
	in.mu.Lock()
	in.sinks = sinks
	e := in.err
	in.mu.Unlock()
	if e != nil { // aborted while Prepare ran
		in.prepared <- prepareResult{err: e}
		in.cleanup(e)
		return
	}
	in.setPhase(Perform)
	in.meter.begin()
	var onProgress func(Progress)
	if fn := in.r.opts.OnProgress; fn != nil {
		onProgress = func(p Progress) { fn(in, p) }
	}
	stopReport := in.meter.report(onProgress, in.r.opts.ProgressInterval)
	defer stopReport()
	in.prepared <- prepareResult{cookie: cookie}

	defer in.watchIdle()()

	var req finishReq
	select {
	case req = <-in.finishReq:
	case <-in.ctx.Done():
		in.meter.stop()
		in.cleanup(in.failure())
		return
	}
	select {
	case <-in.allEnded:
	case <-in.ctx.Done():
	}
	in.meter.stop()
	if e := in.failure(); e != nil {
		req.reply <- finishResult{err: e}
		in.cleanup(e)
		return
	}
	in.setPhase(Finish)
	if e := in.checkSent(req.sent); e != nil {
		req.reply <- finishResult{err: e}
		in.cleanup(e)
		return
	}
	in.PerformCookie = req.cookie
	cookie, err = drv.Finish(in.ctx, in, nil)
	if err != nil {
		// A Finish that fails has cleaned up.
		req.reply <- finishResult{err: in.fail(classify(Finish, Destination, err))}
		return
	}
	if e := in.failure(); e != nil { // aborted, yet Finish took the guest
		req.reply <- finishResult{err: e}
		in.cleanup(e)
		return
	}
	in.setPhase(Confirm) // before the reply: the source's CONFIRM may follow it at once
	req.reply <- finishResult{cookie: cookie}

	var o outcome
	select {
	case o = <-in.outcomes:
	case <-in.ctx.Done(): // an ABORT, the connection lost, or Close
		select {
		case o = <-in.outcomes:
		default:
		}
	}
	if o.err != nil && o.abort { // the source resumes the guest: it must not run here too
		in.cleanup(o.err)
	}
}

// watchIdle fails the migration when the source goes silent on a live
// connection for IdleTimeout: no stream opened or ended, no byte, no
// FINISH or CONFIRM (the driver's Finish, which may take long, is not
// timed). Without it a source that prepared and then said nothing, or
// sent FINISH and left its streams open, or never confirmed, held the
// destination's guest, sinks and goroutines for as long as the
// connection lived. It returns the function that stops the watch.
func (in *Incoming) watchIdle() (stop func()) {
	idle := in.r.opts.IdleTimeout
	if idle < 0 {
		return func() {}
	}
	quit := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(max(idle/4, time.Millisecond))
		defer tick.Stop()
		last, lastPhase, since := in.activity(), in.Phase(), time.Now()
		for {
			select {
			case <-quit:
				return
			case <-in.ctx.Done():
				return
			case now := <-tick.C:
				a, p := in.activity(), in.Phase()
				switch {
				case a != last || p != lastPhase || p == Finish:
					last, lastPhase, since = a, p, now
				case now.Sub(since) >= idle:
					in.fail(&Error{Phase: p, Side: Destination,
						Err: fmt.Errorf("the source sent nothing for %s (ReceiverOptions.IdleTimeout)", idle)})
					return
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-stopped
	}
}

// activity changes whenever the source does something on the streams: a
// stream opened or ended, data bytes received.
func (in *Incoming) activity() int64 {
	in.mu.Lock()
	a := int64(in.ended)
	for _, o := range in.opened {
		if o {
			a++
		}
	}
	in.mu.Unlock()
	for i := range in.meter.counts {
		a += in.meter.counts[i].Load()
	}
	return a
}

// checkSent compares the data bytes each stream received with what the
// source says it sent.
func (in *Incoming) checkSent(sent []int64) *Error {
	if len(sent) != len(in.Streams) {
		return in.fail(&Error{Phase: Finish, Side: Destination,
			Err: fmt.Errorf("the source reports %d streams, %d were prepared", len(sent), len(in.Streams))})
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, st := range in.streams {
		if got := st.BytesReceived(); got != sent[i] {
			e := &Error{Phase: Finish, Side: Destination,
				Err: fmt.Errorf("stream %s: received %d bytes, the source sent %d", in.Streams[i].Name, got, sent[i])}
			in.mu.Unlock()
			e = in.fail(e)
			in.mu.Lock()
			return e
		}
	}
	return nil
}

// cleanup tells the driver that the migration failed.
func (in *Incoming) cleanup(e *Error) {
	ctx, cancel := context.WithTimeout(context.Background(), in.r.opts.CleanupTimeout)
	defer cancel()
	_, _ = in.r.drv.Finish(ctx, in, e)
}

// end waits for the streams' goroutines, forgets the migration and reports
// its outcome.
func (in *Incoming) end() {
	in.meter.stop()
	in.streamsWG.Wait()
	in.mu.Lock()
	e := in.err
	in.mu.Unlock()
	r := in.r
	r.mu.Lock()
	delete(r.in, in.ID)
	r.rememberLocked(in.ID, e)
	r.mu.Unlock()
	close(in.done)
	in.cancel(nil)
	if r.opts.OnDone != nil {
		var err error
		if e != nil {
			err = e
		}
		r.opts.OnDone(in, err)
	}
}
