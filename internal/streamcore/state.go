package streamcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/virtrpc/virtrpc/frame"
)

// The state machine. Each side of a stream has a declared direction: it
// sends, receives, or both (duplex). The direction it sends on goes
// sendOpen -> sendFinished (our finish is queued) -> sendDone (the peer
// acknowledged it); the one it receives on goes recvOpen -> recvEOF (the
// peer finished) -> recvAcked (we acknowledged). A direction the side does
// not use stays sendNone or recvNone, and data arriving on it is a protocol
// error. The stream is settled when both directions are over; an abort
// (ours, the peer's, the connection's) ends it at any point.
//
// The messages of each role:
//
//	             our finish             the peer's finish    our answer to it
//	Native       STREAM/OK, empty       STREAM/OK, empty     STREAM/OK + bytes consumed
//	CompatClient STREAM/OK (whole)      empty STREAM/CONTINUE (none: our STREAM/OK covers it)
//	CompatServer empty STREAM/CONTINUE  STREAM/OK (whole)    STREAM/OK
//
// In compat mode the client's STREAM/OK finishes the whole stream (libvirt
// has no half-close for clients), and the server answers every client
// STREAM/OK with its own. Aborts are STREAM/ERROR (a libvirt client's
// without a payload, acknowledged by libvirtd's STREAM/OK).
//
// Transitions compute their effects under s.mu and carry them out after
// (fx), so that no message is sent with the lock held.

// fx are the messages and the release a transition asks for.
type fx struct {
	ctl     []frame.Status // header-only frames queued behind our data
	oob     []oobMsg       // frames sent ahead of data
	release bool
}

type oobMsg struct {
	status  frame.Status
	payload []byte
}

func (s *Stream) do(e fx) {
	for _, m := range e.oob { // first, as the connection's write scheduler sends them
		s.sendOOB(m.status, m.payload)
	}
	for _, st := range e.ctl {
		s.pushCtl(st)
	}
	if e.release {
		s.release()
	}
}

func (s *Stream) settledLocked() bool {
	return (s.send == sendNone || s.send == sendDone) && (s.recv == recvNone || s.recv == recvAcked)
}

func (s *Stream) unreadLocked() bool {
	return s.inBytes > 0 || len(s.inq) > 0 || s.holesUnread > 0
}

func verdictMsg(consumed int64) oobMsg {
	b := make([]byte, frame.VerdictPayloadSize)
	frame.PutVerdict(b, uint64(consumed))
	return oobMsg{frame.StatusOK, b}
}

// --- events from the peer (the read loop) ---

// peerFinishedLocked: the peer finished its direction. A side whose reader
// is gone (net.Conn Close) acknowledges at once.
func (s *Stream) peerFinishedLocked() fx {
	var e fx
	s.recv = recvEOF
	s.wakeLocked()
	if s.discard {
		switch s.cfg.Role {
		case Native:
			e.oob = append(e.oob, verdictMsg(s.consumed))
			s.recv = recvAcked
		case CompatServer:
			e.oob = append(e.oob, oobMsg{frame.StatusOK, nil}) // the read loop never queues behind data
			s.recv = recvAcked
		case CompatClient:
			if s.okSent { // our STREAM/OK answers it
				s.recv = recvAcked
			}
		}
		e.release = s.settledLocked()
	}
	return e
}

// gotEmptyContinue: libvirtd's end-of-data marker.
func (s *Stream) gotEmptyContinue() error {
	s.mu.Lock()
	var e fx
	switch {
	case s.cfg.Role == Native:
		s.mu.Unlock()
		return errors.New("empty stream data frame (a native peer finishes with STREAM/OK)")
	case s.recv == recvOpen:
		e = s.peerFinishedLocked()
	case s.recv == recvNone && s.cfg.Role == CompatServer:
		s.mu.Unlock()
		return fmt.Errorf("%w: end-of-data marker toward a side that only sends", ErrDirection)
	}
	// CompatClient uploading: libvirtd's marker ahead of its error (capture
	// 10); or a repeated marker. Neither changes anything.
	s.mu.Unlock()
	s.do(e)
	return nil
}

// gotOK handles STREAM/OK. In native mode a verdict (isVerdict) carries
// the bytes the receiver consumed, and an empty one is the peer's finish.
func (s *Stream) gotOK(isVerdict bool, consumed uint64) error {
	s.mu.Lock()
	var e fx
	var err error
	switch s.cfg.Role {
	case Native:
		e, err = s.nativeOKLocked(isVerdict, consumed)
	case CompatClient:
		e = s.clientOKLocked()
	case CompatServer:
		e, err = s.serverOKLocked()
	}
	s.wakeLocked()
	s.mu.Unlock()
	s.do(e)
	return err
}

func (s *Stream) nativeOKLocked(isVerdict bool, consumed uint64) (fx, error) {
	late := s.aborted != nil || s.rerr != nil // crossed our abort, or after a failure
	if isVerdict {
		if s.send != sendFinished {
			if late {
				return fx{}, nil
			}
			return fx{}, errors.New("stream verdict without a finish")
		}
		s.send = sendDone
		if sent := s.sentBytes.Load(); consumed != uint64(sent) && !late {
			// The outcome of our direction only: the peer's direction of a
			// duplex stream goes on, and its finish is still answered.
			s.verdictErr = fmt.Errorf("%w: the receiver consumed %d of the %d bytes sent", ErrIncomplete, consumed, sent)
		}
		return fx{release: s.settledLocked() && s.closed}, nil
	}
	switch {
	case late:
		return fx{}, nil
	case s.recv == recvNone:
		return fx{}, fmt.Errorf("%w: a finish toward a side that only sends", ErrDirection)
	case s.recv != recvOpen:
		return fx{}, errors.New("a second finish of the same stream")
	}
	return s.peerFinishedLocked(), nil
}

// clientOKLocked: the libvirt server's STREAM/OK, the answer to our finish
// or abort.
func (s *Stream) clientOKLocked() fx {
	switch {
	case s.aborted != nil:
		return fx{release: true} // the ack of our abort: nothing more will come
	case s.rerr != nil:
		return fx{}
	case s.okSent:
		if s.send == sendFinished {
			s.send = sendDone
		}
		if s.recv != recvNone {
			s.recv = recvAcked
		}
		return fx{release: s.closed}
	}
	// libvirtd never finishes first; do not pretend the stream succeeded.
	s.rerr = fmt.Errorf("%w: the server finished the stream before the client", ErrPeerFinished)
	s.dropQueueLocked()
	return fx{release: true}
}

// serverOKLocked: the client's STREAM/OK, which finishes the whole stream
// and answers our end-of-data marker; libvirtd answers it with STREAM/OK.
func (s *Stream) serverOKLocked() (fx, error) {
	if s.aborted != nil || s.rerr != nil {
		return fx{}, nil
	}
	var e fx
	switch s.recv {
	case recvOpen:
		e = s.peerFinishedLocked()
	case recvEOF, recvAcked:
		return fx{}, errors.New("a second finish of the same stream")
	}
	switch {
	case s.send == sendFinished:
		s.send = sendDone
		if s.recv == recvNone { // a download: answer now (our marker is out: the client answered it)
			e.oob = append(e.oob, oobMsg{frame.StatusOK, nil})
		}
	case s.send == sendOpen && s.recv == recvNone:
		// The client finished a download before its end: it will not
		// read the rest. Answer, and stop our writer.
		s.rerr = ErrPeerFinished
		s.dropQueueLocked()
		e.oob = append(e.oob, oobMsg{frame.StatusOK, nil})
		e.release = true
		return e, nil
	}
	// duplex with our direction open: the client finished, our data may
	// still go (a virtrpc client keeps reading; libvirt's ends).
	e.release = e.release || s.settledLocked() && s.closed
	return e, nil
}

// gotError handles STREAM/ERROR: the peer aborted, or failed.
func (s *Stream) gotError(payload []byte) {
	err := decodeAbort(payload)
	s.mu.Lock()
	already := s.rerr != nil
	if !already {
		s.rerr = err
	}
	local := s.aborted != nil
	s.dropQueueLocked()
	for _, c := range s.inq {
		putBuf(c.buf) // Read returns the error first: nobody reads these
	}
	s.inq, s.inBytes = nil, 0
	s.wakeLocked()
	s.mu.Unlock()
	if s.cfg.Role == CompatServer && !already && !local {
		s.sendOOB(frame.StatusOK, nil) // libvirtd acknowledges a client's abort
	}
	// Nothing more comes from a peer that aborted (a libvirt client waits
	// for the ack just sent): release now, so a stream whose user stops at
	// the error without Close does not stay registered with its buffers.
	s.release()
}

// --- local operations ---

// Close finishes the stream and waits for the outcome.
func (s *Stream) Close() error { return s.Finish(context.Background()) }

// Finish ends both directions this side uses and waits, until ctx ends,
// for the peer to acknowledge. A receiver that has not read everything up
// to the peer's finish aborts instead, and Finish returns
// ErrReceiverClosed. If ctx ends first, the stream is aborted: while our
// finish is still queued it is dropped and the abort goes instead, and
// Finish returns ctx's error; once the finish is on its way, the receiver
// may have read it and acknowledged before the abort arrives, and Finish
// returns ErrOutcomeUnknown wrapping ctx's error.
func (s *Stream) Finish(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || s.aborted != nil { // closed already: the same outcome again
		err := s.outcomeLocked()
		if err == nil && s.aborted != nil {
			err = s.aborted // aborted locally: not a success
		}
		s.mu.Unlock()
		return err
	}
	if s.rerr != nil {
		err := s.rerr
		// virsh answers a server's error after its end marker (capture 10).
		ack := s.recv == recvEOF && s.cfg.Role == CompatClient && !s.okSent
		s.closed, s.okSent = true, s.okSent || ack
		s.mu.Unlock()
		if ack {
			s.sendOOB(frame.StatusOK, nil)
		}
		s.release()
		return err
	}
	if s.finishing { // another Finish is waiting for the outcome: share it
		s.mu.Unlock()
		return s.awaitSettled(ctx)
	}
	if s.recv == recvOpen || s.recv == recvEOF && s.unreadLocked() {
		s.mu.Unlock()
		_ = s.CloseWithError(ErrReceiverClosed)
		return ErrReceiverClosed
	}
	s.finishing = true
	e := s.finishLocked()
	s.mu.Unlock()
	s.do(e)
	return s.awaitSettled(ctx)
}

// finishLocked queues our finish and our answer to the peer's finish; the
// direction we receive on is at its end and read whole, or unused.
func (s *Stream) finishLocked() fx {
	var e fx
	switch s.cfg.Role {
	case Native:
		if s.recv == recvEOF {
			e.oob = append(e.oob, verdictMsg(s.consumed))
			s.recv = recvAcked
		}
		if s.send == sendOpen {
			e.ctl = append(e.ctl, frame.StatusOK)
			s.send = sendFinished
		}
	case CompatClient:
		if !s.okSent {
			e.ctl = append(e.ctl, frame.StatusOK)
			s.okSent = true
			if s.send == sendOpen {
				s.send = sendFinished
			}
		}
	case CompatServer:
		switch {
		case s.recv == recvEOF: // the client finished the whole stream: answer it
			if s.send != sendNone {
				e.ctl = append(e.ctl, frame.StatusOK) // behind our data
				s.send = sendDone
			} else {
				e.oob = append(e.oob, oobMsg{frame.StatusOK, nil})
			}
			s.recv = recvAcked
		case s.send == sendOpen:
			e.ctl = append(e.ctl, frame.StatusContinue) // end-of-data marker
			s.send = sendFinished
		}
	}
	return e
}

func (s *Stream) awaitSettled(ctx context.Context) error {
	stop := s.watch(ctx, &s.sendCond)
	defer stop()
	s.mu.Lock()
	for !s.settledLocked() && s.rerr == nil && s.aborted == nil && ctx.Err() == nil {
		s.sendCond.Wait()
	}
	settled := s.settledLocked()
	err := s.outcomeLocked()
	if err == nil && !settled && s.aborted != nil {
		err = s.aborted // aborted meanwhile by CloseWithError
	}
	timedOut := err == nil && !settled
	var marker bool
	if timedOut {
		// Decided under the lock the writer pops frames under: a finish
		// still queued is dropped with the rest (abortLocked), so the
		// abort is what the peer gets; one popped may be read first.
		err = ctx.Err()
		local := err
		if s.finOut {
			local = fmt.Errorf("%w (%w)", ErrOutcomeUnknown, err)
		}
		marker = s.abortLocked(local)
		err = local
	} else {
		s.closed = true
		s.wakeLocked()
	}
	s.mu.Unlock()
	if timedOut {
		s.sendAbort(marker, ctx.Err())
		return err
	}
	s.release()
	return err
}

// CloseWrite finishes the direction this side sends on and returns without
// waiting; reading goes on. Close then waits for the peer's verdict.
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	if err := s.sendErrLocked(); err != nil {
		finished := s.send == sendFinished && s.aborted == nil && s.rerr == nil && !s.closed
		s.mu.Unlock()
		if finished {
			return nil // twice
		}
		return err
	}
	var e fx
	switch s.cfg.Role {
	case Native:
		e.ctl = append(e.ctl, frame.StatusOK)
	case CompatClient:
		e.ctl = append(e.ctl, frame.StatusOK) // finishes the whole stream for a libvirt server
		s.okSent = true
	case CompatServer:
		// libvirtd's end marker. After the client's own finish (recvEOF,
		// a duplex client that half-closed first) it is still due: the
		// client reads our direction to its end before it learns our verdict.
		if s.recv == recvOpen || s.recv == recvNone || s.recv == recvEOF {
			e.ctl = append(e.ctl, frame.StatusContinue)
		}
	}
	s.send = sendFinished
	s.wakeLocked()
	s.mu.Unlock()
	s.do(e)
	return nil
}

// CloseWithError aborts the stream: queued data is dropped and the peer is
// told err. It returns nil, or the peer's error if it had already failed.
func (s *Stream) CloseWithError(err error) error {
	if err == nil {
		err = errLocalAbort
	}
	s.mu.Lock()
	if s.aborted != nil || s.rerr != nil || s.settledLocked() { // over already
		rerr := s.rerr
		s.closed = true
		s.mu.Unlock()
		s.release()
		if errors.Is(rerr, ErrAborted) {
			return nil
		}
		return rerr
	}
	marker := s.abortLocked(err)
	s.mu.Unlock()
	s.sendAbort(marker, err)
	return nil
}

// abortLocked marks the stream aborted with err (what local operations
// report) and drops what is queued; sendAbort then tells the peer. It
// reports whether libvirtd's end marker must go first.
func (s *Stream) abortLocked(err error) (marker bool) {
	s.aborted = &abortError{err}
	s.dropQueueLocked()
	s.wakeLocked()
	return s.cfg.Role == CompatServer && s.send == sendOpen
}

// sendAbort sends the abort with reason err, after abortLocked.
func (s *Stream) sendAbort(marker bool, err error) {
	var payload []byte
	if s.cfg.Role != CompatClient {
		payload = encodeAbort(err)
	}
	if marker {
		s.sendOOB(frame.StatusContinue, nil) // libvirtd's failing sender: end marker, then the error (capture 10)
	}
	s.sendOOB(frame.StatusError, payload)
	// libvirtd acknowledges a client's abort; other roles expect nothing.
	// Either way late frames are dropped once the stream is released.
	if s.cfg.Role != CompatClient {
		s.release()
	}
}

// CloseNet is a net.Conn's Close: it finishes our direction and stops
// reading, without waiting. Data the peer still sends is dropped (in
// native mode its Close learns from the verdict that it was not
// consumed); the peer's finish is acknowledged as it comes.
func (s *Stream) CloseNet() {
	s.mu.Lock()
	if s.aborted != nil || s.rerr != nil {
		s.closed = true
		s.mu.Unlock()
		s.release()
		return
	}
	if s.closed { // closed already: the peer's answers are still to come
		s.mu.Unlock()
		return
	}
	s.closed, s.discard = true, true
	for _, c := range s.inq {
		putBuf(c.buf)
	}
	s.inq, s.holesUnread = nil, 0
	s.dropped += int64(s.inBytes)
	s.inBytes = 0
	e := s.finishLocked()
	if s.cfg.Role == CompatClient && s.recv == recvEOF {
		s.recv = recvAcked // our OK answers the server's end too
	}
	e.release = s.settledLocked()
	grant := s.grantLocked()
	s.wakeLocked()
	s.mu.Unlock()
	s.do(e)
	if grant > 0 {
		s.link.SendCredit(s.cfg.Header.Serial, uint64(grant), true)
	}
}

// outcomeLocked is what Close reports once the stream is over: the peer's
// or the connection's failure, else the verdict on our direction.
func (s *Stream) outcomeLocked() error {
	if s.rerr != nil {
		return s.rerr
	}
	return s.verdictErr
}

func (s *Stream) dropQueueLocked() {
	for _, of := range s.outq {
		putBuf(of.buf)
	}
	s.outq = s.outq[:0]
}
