package rpc_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// The attacks of the hostile-peer suite (hostile_test.go runs them).

// attackers runs n copies of one attacker loop until stop.
func attackers(n int, stop <-chan struct{}, loop func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped(stop) {
				loop(i)
			}
		}()
	}
	wg.Wait()
}

var zeros2M = make([]byte, 2<<20)

func hostileAttacks() []attack {
	return []attack{
		{
			// A signed-in peer announces a 32 MiB call and sends its body
			// at 10 B/s; eight at a time, each replaced when reaped.
			name: "slow body",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				attackers(8, stop, func(int) {
					tl.attempts.Add(1)
					h, err := signedIn(addr, false)
					if err != nil {
						tl.fail(err)
						time.Sleep(100 * time.Millisecond)
						return
					}
					defer h.Close()
					msg := rawFrame(hdr(procedure(echoProc), frame.TypeCall, 2, frame.StatusOK), nil)
					copy(msg, lenWord(frame.LenSize+frame.MaxMessage)) // 32 MiB of body to come
					if err := h.raw(msg); err != nil {
						tl.fail(err)
						return
					}
					for !stopped(stop) {
						if _, err := h.nc.Write([]byte{0}); err != nil {
							tl.closed.Add(1)
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
				})
			},
			done: func(e *hostileEnv, tl *tally) bool { return tl.closed.Load() >= 8 },
			check: func(t *testing.T, e *hostileEnv, tl *tally) {
				assert.GreaterOrEqual(t, e.closedWith(errIs(rpc.ErrSlowPeer, "B/s required")), 8, "connections reaped as slow")
			},
		},
		{
			// Lengths no server should read: 4 GiB, over MaxMessage after
			// signing in, and a 32 MiB call before signing in.
			name: "huge lengths",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				attackers(3, stop, func(i int) {
					tl.attempts.Add(1)
					var h *hostile
					var err error
					if i == 1 {
						h, err = signedIn(addr, false)
					} else {
						h, err = dialHostile(addr)
					}
					if err != nil && i == 1 {
						// The other two churn anonymous connections: past
						// MaxUnauthenticated this one is refused too.
						tl.refused.Add(1)
						time.Sleep(10 * time.Millisecond)
						return
					}
					if err != nil {
						tl.fail(err)
						return
					}
					defer h.Close()
					lengths := []uint32{0xffffffff, frame.LenSize + frame.MaxMessage + 1, frame.LenSize + frame.MaxMessage}
					if err := h.raw(append(lenWord(lengths[i]), make([]byte, 24)...)); err != nil {
						tl.fail(err)
						return
					}
					if h.closedByServer(10 * time.Second) {
						tl.closed.Add(1)
					} else {
						tl.fail(fmt.Errorf("length %#x: the connection stayed open", lengths[i]))
					}
				})
			},
			done: func(e *hostileEnv, tl *tally) bool { return tl.closed.Load() >= 30 },
			check: func(t *testing.T, e *hostileEnv, tl *tally) {
				assert.Positive(t, e.closedWith(errIs(frame.ErrFrameTooLarge, "before authentication")), "refused before authentication")
				assert.Positive(t, e.closedWith(errIs(frame.ErrFrameTooLarge, "> 33554432")), "refused over MaxMessage")
			},
		},
		{
			// Twelve signed-in peers each send eight 2 MiB echo calls and
			// read nothing until the end: 192 MiB of replies owed.
			name: "unread large echoes",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				var wg sync.WaitGroup
				for range 12 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						tl.attempts.Add(1)
						h, err := signedIn(addr, false)
						if err != nil {
							tl.fail(err)
							return
						}
						defer h.Close()
						for s := range uint32(8) {
							if err := h.write(hdr(procedure(echoProc), frame.TypeCall, 2+s, frame.StatusOK), zeros2M); err != nil {
								tl.fail(err)
								return
							}
						}
						if err := h.flush(); err != nil {
							tl.fail(err)
							return
						}
						tl.sent.Add(8)
						if err := pingUntil(h, stop); err != nil { // alive, as far as keepalive can tell
							tl.fail(err)
							return
						}
						// Now read what came of them, in any order: the
						// handlers ran at once. The pings stopped: answer
						// the server's, as a live client does, or a read of
						// the replies that a loaded run drags past the
						// server's keepalive deadline (2 s) is rightly taken
						// for a dead peer.
						_ = h.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
						for n := 0; n < 8; {
							hd, _, err := h.fr.Next()
							if err != nil {
								tl.fail(fmt.Errorf("after %d replies: %w", n, err))
								return
							}
							body, err := h.fr.Payload()
							if err != nil {
								tl.fail(err)
								return
							}
							if hd.Type == frame.TypeMessage && hd.Prog == frame.KeepaliveProgram && hd.Proc == frame.KeepalivePing {
								if _, err := h.nc.Write(pong); err != nil {
									tl.fail(fmt.Errorf("after %d replies: answering a ping: %w", n, err))
									return
								}
								continue
							}
							if hd.Type != frame.TypeReply {
								continue
							}
							n++
							if hd.Status == frame.StatusOK {
								tl.ok.Add(1)
								continue
							}
							if e, _ := frame.DecodeError(body); e != nil && strings.Contains(e.Error(), "memory budget") {
								tl.failed.Add(1)
							} else {
								tl.fail(fmt.Errorf("reply to %d: unexpected error %v", hd.Serial, e))
							}
						}
					}()
				}
				wg.Wait()
			},
			done: func(e *hostileEnv, tl *tally) bool { return tl.sent.Load() == 12*8 },
			check: func(t *testing.T, e *hostileEnv, tl *tally) {
				assert.Positive(t, tl.ok.Load(), "echoes served within the budget")
				assert.Positive(t, tl.failed.Load(), "calls failed as over the budget")
				assert.Equal(t, int64(12*8), tl.ok.Load()+tl.failed.Load(), "every call answered")
			},
		},
		{
			// Signed-in peers flood small echo calls and never read.
			name: "unread small calls",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				attackers(2, stop, func(int) {
					tl.attempts.Add(1)
					h, err := signedIn(addr, false)
					if err != nil {
						tl.fail(err)
						return
					}
					defer h.Close()
					payload := make([]byte, 16)
					for s := uint32(2); !stopped(stop); s++ {
						if err := h.write(hdr(procedure(echoProc), frame.TypeCall, s, frame.StatusOK), payload); err != nil {
							tl.closed.Add(1)
							return
						}
					}
				})
			},
			done: func(e *hostileEnv, tl *tally) bool {
				return e.closedWith(errIs(rpc.ErrMemoryBudget, "pile up unread")) >= 2
			},
			check: func(t *testing.T, e *hostileEnv, tl *tally) {},
		},
		{
			// Signed-in peers ask for 16 MiB of echoes, never read, and
			// ping so that keepalive holds them alive.
			name: "unread replies kept alive by pings",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				attackers(2, stop, func(int) {
					tl.attempts.Add(1)
					h, err := signedIn(addr, false)
					if err != nil {
						tl.fail(err)
						return
					}
					defer h.Close()
					for s := range uint32(1024) {
						if err := h.write(hdr(procedure(echoProc), frame.TypeCall, 2+s, frame.StatusOK), zeros2M[:16<<10]); err != nil {
							tl.fail(err)
							return
						}
					}
					if err := h.flush(); err != nil {
						tl.fail(err)
						return
					}
					if pingUntil(h, stop) != nil {
						tl.closed.Add(1)
					}
				})
			},
			done: func(e *hostileEnv, tl *tally) bool {
				// "nothing written for" (stallCheck) while its replies are
				// queued; "none taken by the peer" (sockCheck) once the
				// kernel holds them all, as when most calls were refused
				// as too many at once.
				return e.closedWith(errIs(rpc.ErrPeerNotReading, "")) >= 2
			},
			check: func(t *testing.T, e *hostileEnv, tl *tally) {},
		},
		{
			// Native, signed-in peers flood MESSAGEs (64 KiB, or empty) to a
			// handler that never returns.
			name: "message flood",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				attackers(4, stop, func(i int) {
					tl.attempts.Add(1)
					h, err := signedIn(addr, true)
					if err != nil {
						tl.fail(err)
						return
					}
					defer h.Close()
					payload := zeros2M[:(i%2)*64<<10]
					m := hdr(procedure(slowMsgProc), frame.TypeMessage, 0, frame.StatusOK)
					for !stopped(stop) {
						if err := h.write(m, payload); err != nil {
							tl.closed.Add(1)
							return
						}
					}
				})
			},
			done: func(e *hostileEnv, tl *tally) bool {
				return e.closedWith(errIs(rpc.ErrMemoryBudget, "message of")) >= 2
			},
			check: func(t *testing.T, e *hostileEnv, tl *tally) {},
		},
		{
			// Thousands of connections that never authenticate: at most
			// MaxUnauthenticated are served, each until AuthTimeout; the rest
			// are closed as they arrive.
			name: "anonymous connection flood",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				n := fdBudget(2000)
				var mu sync.Mutex
				var open []net.Conn
				defer func() {
					for _, nc := range open {
						_ = nc.Close()
					}
				}()
				attackers(8, stop, func(int) {
					mu.Lock()
					full := len(open) >= n
					mu.Unlock()
					if full {
						time.Sleep(50 * time.Millisecond)
						return
					}
					tl.attempts.Add(1)
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						tl.fail(err)
						return
					}
					if (&hostile{nc: nc}).closedByServer(10 * time.Millisecond) {
						tl.refused.Add(1)
						_ = nc.Close()
						return
					}
					mu.Lock()
					open = append(open, nc)
					mu.Unlock()
				})
			},
			done: func(e *hostileEnv, tl *tally) bool {
				return tl.attempts.Load() >= int64(fdBudget(2000)) && e.closedWith(errIs(rpc.ErrAuthTimeout, "AuthTimeout")) >= hMaxAnon
			},
			check: func(t *testing.T, e *hostileEnv, tl *tally) {
				// The legitimate one is authenticated.
				assert.LessOrEqual(t, e.peak.Load(), int64(hMaxAnon+1), "connections served at once")
				assert.Greater(t, tl.refused.Load(), tl.attempts.Load()/2, "connections refused at once")
			},
		},
		{
			// Many connections that sign in and then answer pings to stay:
			// at most MaxConnections are served, the rest closed at once.
			name: "authenticated connection flood",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				n := fdBudget(1000)
				var wg sync.WaitGroup
				var mu sync.Mutex
				var open []*hostile
				defer func() {
					mu.Lock()
					for _, h := range open {
						h.Close()
					}
					mu.Unlock()
					wg.Wait()
				}()
				attackers(8, stop, func(int) { // fewer at once than MaxUnauthenticated
					if tl.attempts.Add(1) > int64(n) {
						tl.attempts.Add(-1)
						time.Sleep(50 * time.Millisecond)
						return
					}
					h, err := signedIn(addr, false)
					if err != nil {
						tl.refused.Add(1) // closed before it could sign in
						return
					}
					mu.Lock()
					open = append(open, h)
					mu.Unlock()
					wg.Add(1)
					go func() { defer wg.Done(); h.keepAnswering() }()
				})
			},
			done: func(e *hostileEnv, tl *tally) bool { return tl.attempts.Load() >= int64(fdBudget(1000)) },
			check: func(t *testing.T, e *hostileEnv, tl *tally) {
				assert.Greater(t, tl.refused.Load(), tl.attempts.Load()/2, "connections refused at once")
			},
		},
		{
			// Peers send pings as fast as they can and read nothing: one
			// PONG is queued however many come, and pings are liveness, so
			// the connection stays.
			name: "ping flood",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				ping := rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
				attackers(2, stop, func(int) {
					tl.attempts.Add(1)
					h, err := signedIn(addr, false) // else AuthTimeout reaps it
					if err != nil {
						tl.fail(err)
						return
					}
					defer h.Close()
					for !stopped(stop) {
						if _, err := h.bw.Write(ping); err != nil {
							tl.closed.Add(1)
							return
						}
						tl.sent.Add(1)
					}
				})
			},
			done: func(e *hostileEnv, tl *tally) bool { return tl.sent.Load() >= 150_000 },
			check: func(t *testing.T, e *hostileEnv, tl *tally) {
				assert.Zero(t, tl.closed.Load(), "a peer that pings is alive")
			},
		},
		{
			// Signed-in peers upload with 1-byte stream frames as fast as
			// they can: the receiver packs them instead of pinning a buffer
			// each.
			name: "tiny stream frames",
			run: func(addr string, stop <-chan struct{}, tl *tally) {
				attackers(2, stop, func(int) {
					tl.attempts.Add(1)
					h, err := signedIn(addr, false)
					if err != nil {
						tl.fail(err)
						return
					}
					defer h.Close()
					if err := h.call(procedure(verifyUploadProc), 2, make([]byte, 32)); err != nil {
						tl.fail(err)
						return
					}
					d := hdr(procedure(verifyUploadProc), frame.TypeStream, 2, frame.StatusContinue)
					for !stopped(stop) {
						if err := h.write(d, []byte{1}); err != nil {
							tl.fail(err)
							return
						}
						tl.sent.Add(1)
					}
					_ = h.write(hdr(procedure(verifyUploadProc), frame.TypeStream, 2, frame.StatusOK), nil)
					_ = h.flush()
				})
			},
			done:  func(e *hostileEnv, tl *tally) bool { return tl.sent.Load() >= 200_000 },
			check: func(t *testing.T, e *hostileEnv, tl *tally) {},
		},
	}
}

// pong answers the server's keepalive ping.
var pong = rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePong, Type: frame.TypeMessage}, nil)

// pingUntil pings every 100 ms until stop, reading nothing.
func pingUntil(h *hostile, stop <-chan struct{}) error {
	ping := rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
	for {
		select {
		case <-stop:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := h.nc.Write(ping); err != nil {
			return err
		}
	}
}

// fdBudget is want, or less if the file descriptor limit (both ends of
// every connection are in this process) cannot take it.
func fdBudget(want int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return want
	}
	return max(100, min(want, (int(rl.Cur)-500)/2))
}
