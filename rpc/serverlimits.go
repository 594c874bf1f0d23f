package rpc

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrAuthTimeout: the connection was not authenticated within
// Options.AuthTimeout of its start.
var ErrAuthTimeout = errors.New("virtrpc: not authenticated in time")

// connCost is what Serve charges its memory budget for each connection
// it accepts, before the connection receives anything: the reserve the
// connection's own budget starts with, and about what an idle connection
// holds (measured: 5000 idle connections took 71 KiB of heap each, a 64 KiB
// read buffer or TLS's buffers among it, plus six goroutines' stacks).
const connCost = connReserve + 128<<10

// serverLimits is what a Serve's connections share: their count, the count
// of those not yet authenticated, and the memory budget.
type serverLimits struct {
	maxConns, maxAnon int64
	gated             bool // Auth is set: connections start unauthenticated
	authTimeout       time.Duration
	mem               serverBudget
	conns, anon       atomic.Int64
}

func newServerLimits(cfg config) *serverLimits {
	return &serverLimits{
		maxConns:    int64(cfg.MaxConnections),
		maxAnon:     int64(cfg.MaxUnauthenticated),
		gated:       cfg.Auth != nil,
		authTimeout: cfg.AuthTimeout,
		mem:         serverBudget{limit: int64(cfg.ServerMemory)},
	}
}

// testHookServeLimits, if set, is given each Serve's limits (tests).
var testHookServeLimits func(*serverLimits)

// admission is one accepted connection's place within the limits.
type admission struct {
	s    *serverLimits
	anon atomic.Bool // counted in s.anon
}

// admit takes a place for a connection just accepted, or says why there is
// none; the caller then closes it at once. Places are taken before the TLS
// handshake, so handshakes under way count too.
func (s *serverLimits) admit() (*admission, error) {
	if n := s.conns.Add(1); n > s.maxConns {
		s.conns.Add(-1)
		return nil, fmt.Errorf("virtrpc: connection refused: %d connections already (MaxConnections)", n-1)
	}
	a := &admission{s: s}
	if s.gated {
		if n := s.anon.Add(1); n > s.maxAnon {
			s.anon.Add(-1)
			s.conns.Add(-1)
			return nil, fmt.Errorf("virtrpc: connection refused: %d connections not yet authenticated (MaxUnauthenticated)", n-1)
		}
		a.anon.Store(true)
	}
	if !s.mem.take(connCost) {
		a.authenticated()
		s.conns.Add(-1)
		return nil, fmt.Errorf("%w: connection refused: the server's %d bytes are in use", ErrMemoryBudget, s.mem.limit)
	}
	return a, nil
}

// authenticated frees the connection's place among the unauthenticated,
// once: when it authenticates, or when it closes.
func (a *admission) authenticated() {
	if a != nil && a.anon.CompareAndSwap(true, false) {
		a.s.anon.Add(-1)
	}
}

// leave frees the connection's places and what its budget still held, once
// its goroutines have ended (c is nil if it never started).
func (a *admission) leave(c *Conn) {
	a.authenticated()
	if c != nil {
		c.mem.close()
	}
	a.s.mem.give(connCost)
	a.s.conns.Add(-1)
}

// watchAuth closes c if it is not authenticated within AuthTimeout; the
// returned func stops the watch.
func (a *admission) watchAuth(c *Conn) func() bool {
	if !a.anon.Load() || a.s.authTimeout <= 0 {
		return func() bool { return false }
	}
	t := time.AfterFunc(a.s.authTimeout, func() {
		if !c.Authenticated() {
			c.closeWith(fmt.Errorf("%w (AuthTimeout %v)", ErrAuthTimeout, a.s.authTimeout))
		}
	})
	return t.Stop
}
