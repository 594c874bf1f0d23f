package rpc_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// The hostile peer's tools: a raw connection that speaks the wire by hand
// and reports failures as errors (they run off the test's goroutine).

// slowMsgProc is a MESSAGE whose handler does not return until the
// connection closes. (signInProc opens the auth gate.)
var slowMsgProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 62}

// hostile is one attacker connection.
type hostile struct {
	nc net.Conn
	bw *bufio.Writer
	fr *frame.Reader
}

func dialHostile(addr string) (*hostile, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &hostile{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10), fr: frame.NewReader(bufio.NewReader(nc), nil)}, nil
}

func (h *hostile) Close() { _ = h.nc.Close() }

// write queues one message; flush sends what is queued. It copies
// nothing: the attackers' memory is not to be taken for the server's.
func (h *hostile) write(hd frame.Header, payload []byte) error {
	var b [frame.Overhead]byte
	frame.PutHeader(b[:], hd, len(payload))
	if _, err := h.bw.Write(b[:]); err != nil {
		return err
	}
	_, err := h.bw.Write(payload)
	return err
}

func (h *hostile) flush() error { return h.bw.Flush() }

func (h *hostile) raw(b []byte) error {
	if _, err := h.bw.Write(b); err != nil {
		return err
	}
	return h.bw.Flush()
}

// reply waits for the reply to serial, answering nothing and skipping
// keepalive; it returns the reply's status and payload.
func (h *hostile) reply(serial uint32, within time.Duration) (frame.Status, []byte, error) {
	_ = h.nc.SetReadDeadline(time.Now().Add(within))
	defer func() { _ = h.nc.SetReadDeadline(time.Time{}) }()
	for {
		hd, _, err := h.fr.Next()
		if err != nil {
			return 0, nil, err
		}
		p, err := h.fr.Payload()
		if err != nil {
			return 0, nil, err
		}
		if hd.Type == frame.TypeReply && hd.Serial == serial {
			return hd.Status, p, nil
		}
	}
}

// call sends a call and waits for an OK reply.
func (h *hostile) call(p procedure, serial uint32, payload []byte) error {
	if err := h.write(hdr(p, frame.TypeCall, serial, frame.StatusOK), payload); err != nil {
		return err
	}
	if err := h.flush(); err != nil {
		return err
	}
	st, body, err := h.reply(serial, 10*time.Second)
	if err != nil {
		return err
	}
	if st != frame.StatusOK {
		e, _ := frame.DecodeError(body)
		return fmt.Errorf("call %s: %v", frame.Header{Prog: p.Prog, Proc: p.Proc}, e)
	}
	return nil
}

// signedIn dials and passes the auth gate (serial 1); native also makes the
// connection native first (HELLO, serial 0).
func signedIn(addr string, native bool) (*hostile, error) {
	h, err := dialHostile(addr)
	if err != nil {
		return nil, err
	}
	if native {
		if err := h.raw(helloFrame(1 << 20)); err != nil {
			h.Close()
			return nil, err
		}
		if st, _, err := h.reply(0, 10*time.Second); err != nil || st != frame.StatusOK {
			h.Close()
			return nil, fmt.Errorf("HELLO: status %v, %v", st, err)
		}
	}
	if err := h.call(procedure(signInProc), 1, nil); err != nil {
		h.Close()
		return nil, fmt.Errorf("sign in: %w", err)
	}
	return h, nil
}

// closedByServer reports whether the server has closed h's connection
// (EOF or a reset), reading and dropping whatever comes first.
func (h *hostile) closedByServer(within time.Duration) bool {
	_ = h.nc.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, h.nc)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// keepAnswering answers the server's pings on h until it closes, as a peer
// that wants to stay connected does; it returns when the connection ends.
func (h *hostile) keepAnswering() {
	pong := rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePong, Type: frame.TypeMessage}, nil)
	for {
		hd, _, err := h.fr.Next()
		if err != nil {
			return
		}
		if err := h.fr.Discard(); err != nil {
			return
		}
		if hd.Prog == frame.KeepaliveProgram && hd.Proc == frame.KeepalivePing {
			if _, err := h.nc.Write(pong); err != nil {
				return
			}
		}
	}
}

// tally counts what attackers saw, from many goroutines.
type tally struct {
	attempts, closed, refused atomic.Int64
	sent, ok, failed          atomic.Int64
	mu                        sync.Mutex
	errs                      []error // unexpected: the attack itself broke
}

func (t *tally) fail(err error) {
	t.mu.Lock()
	if len(t.errs) < 10 {
		t.errs = append(t.errs, err)
	}
	t.mu.Unlock()
}

// stopped reports whether stop is closed.
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}
