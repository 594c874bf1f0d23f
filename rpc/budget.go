package rpc

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/virtrpc/virtrpc/frame"
)

// ErrMemoryBudget: what the peer sent, or a reply to it, does not fit the
// connection's or the server's memory budget (Options.ConnectionMemory,
// Options.ServerMemory). A call refused for it gets an error reply; a
// message or reply that cannot be held closes the connection.
var ErrMemoryBudget = errors.New("virtrpc: over the memory budget")

// connReserve is the part of a connection's budget that is its own, not
// drawn from the server's (see memBudget): room for small calls, their
// replies and a stream's control messages.
const connReserve = 64 << 10

// queueEntryCost is what a queued message holds besides its bytes (its
// slice in the queue, its allocation's rounding), so that a flood of tiny
// replies is charged what it costs.
const queueEntryCost = 64

// queuedCost is what a queued message of n bytes is charged.
func queuedCost(n int) int64 { return int64(n) + queueEntryCost }

// serverBudget is the memory all of a Serve's connections may hold.
type serverBudget struct {
	limit int64
	used  atomic.Int64
}

func (s *serverBudget) take(n int64) bool {
	if s.used.Add(n) > s.limit {
		s.used.Add(-n)
		return false
	}
	return true
}

func (s *serverBudget) give(n int64) { s.used.Add(-n) }

// memBudget is what one connection may hold of buffers its peer can fill:
// message bodies being read, call payloads while their handler runs,
// replies and messages waiting for the writer, messages waiting for their
// handler, and each receiving stream's initial buffer while it is open
// (streams.go; window growth beyond it is bounded by streamcore.Budget).
//
// The first reserve bytes are the connection's own, paid to the server
// when it was accepted, so a small call always fits however full the server
// is; bytes beyond it are drawn from the server's budget as well. Charged
// per body growth step, reply or message, never per stream frame.
type memBudget struct {
	mu      sync.Mutex
	limit   int64
	reserve int64
	used    int64
	server  *serverBudget // nil: a connection outside Serve
	closed  bool
}

func newMemBudget(limit, reserve int64, server *serverBudget) *memBudget {
	return &memBudget{limit: limit, reserve: min(reserve, limit), server: server}
}

// over is the part of used beyond the reserve: what the server lends.
func (b *memBudget) over(used int64) int64 { return max(0, used-b.reserve) }

// errorHeadroom is kept free by take for error replies (takeError): a
// call refused for the budget can still be told so.
const errorHeadroom = 16 << 10

// take charges n bytes if they fit both budgets, leaving errorHeadroom.
func (b *memBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit-errorHeadroom {
		return false
	}
	if d := b.over(b.used+n) - b.over(b.used); d > 0 && b.server != nil && !b.closed && !b.server.take(d) {
		return false
	}
	b.used += n
	return true
}

// takeError charges an error reply of n bytes if it fits the connection's
// limit, headroom included. The server's part is not checked: an error
// reply is small, and a full server is no reason to leave a call
// unanswered; the server's budget is then exceeded by at most errorHeadroom
// per connection.
func (b *memBudget) takeError(n int64) bool {
	b.mu.Lock()
	fits := b.used+n <= b.limit
	b.mu.Unlock()
	if fits {
		b.force(n)
	}
	return fits
}

// force charges n bytes whatever the budgets say (takeError checked the
// connection's limit).
func (b *memBudget) force(n int64) {
	b.mu.Lock()
	if d := b.over(b.used+n) - b.over(b.used); d > 0 && b.server != nil && !b.closed {
		b.server.used.Add(d)
	}
	b.used += n
	b.mu.Unlock()
}

// give returns n bytes taken or forced.
func (b *memBudget) give(n int64) {
	b.mu.Lock()
	if d := b.over(b.used) - b.over(b.used-n); d > 0 && b.server != nil && !b.closed {
		b.server.give(d)
	}
	b.used -= n
	b.mu.Unlock()
}

// close returns everything still charged to the server, once the
// connection's goroutines have ended (what they held is garbage then).
func (b *memBudget) close() {
	b.mu.Lock()
	if !b.closed && b.server != nil {
		b.server.give(b.over(b.used))
	}
	b.closed = true
	b.mu.Unlock()
}

// inUse is what the connection holds now.
func (b *memBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// budgetError says which budget n bytes did not fit.
func (c *Conn) budgetError(what string, n int64) error {
	if c.mem.server != nil {
		return fmt.Errorf("%w: %s of %d bytes does not fit the connection's %d bytes or the server's %d", ErrMemoryBudget, what, n, c.mem.limit, c.mem.server.limit)
	}
	return fmt.Errorf("%w: %s of %d bytes does not fit the connection's %d bytes", ErrMemoryBudget, what, n, c.mem.limit)
}

// readBody reads the current payload, charging its buffer to the budget as
// it grows. On failure nothing stays charged; the caller gives back
// charged once it lets go of the payload.
func (c *Conn) readBody(fr *frame.Reader, what string) (payload []byte, charged int64, err error) {
	total := fr.Remaining()
	payload, err = fr.PayloadFunc(func(n int) error {
		if !c.mem.take(int64(n)) {
			return c.budgetError(what, int64(total))
		}
		charged += int64(n)
		return nil
	})
	if err != nil {
		c.mem.give(charged)
		return nil, 0, err
	}
	return payload, charged, nil
}
