package rpc

import (
	"errors"
	"sync"
)

// maxQueuedMessageBytes bounds messages received but not yet handled (they
// are charged to the connection's memory budget too, which may be smaller). A
// handler that falls this far behind closes the connection with an error:
// the read loop never waits for user code, and messages are never dropped
// silently.
const maxQueuedMessageBytes = 64 << 20

// messageCost is what one queued message counts against the bound besides
// its payload, so a flood of empty messages is bounded too.
const messageCost = 128

var errSlowMessages = errors.New("message handlers fell behind by more than 64 MiB")

// messageQueue delivers a connection's messages in order on one goroutine.
type messageQueue struct {
	c      *Conn
	mu     sync.Mutex
	cond   sync.Cond
	q      []*Message
	bytes  int
	closed bool
}

func newMessageQueue(c *Conn) *messageQueue {
	m := &messageQueue{c: c}
	m.cond.L = &m.mu
	return m
}

func (m *messageQueue) push(msg *Message) {
	m.mu.Lock()
	if m.bytes+len(msg.Payload)+messageCost > maxQueuedMessageBytes {
		m.mu.Unlock()
		m.c.mem.give(msg.charged)
		m.c.closeWith(errSlowMessages)
		return
	}
	m.q = append(m.q, msg)
	m.bytes += len(msg.Payload) + messageCost
	m.cond.Signal()
	m.mu.Unlock()
}

func (m *messageQueue) close() {
	m.mu.Lock()
	m.closed = true
	m.cond.Broadcast()
	m.mu.Unlock()
}

func (m *messageQueue) run() {
	defer m.c.user.Done()
	for {
		m.mu.Lock()
		for len(m.q) == 0 && !m.closed {
			m.cond.Wait()
		}
		if m.closed {
			m.q = nil
			m.mu.Unlock()
			return
		}
		msg := m.q[0]
		m.q[0] = nil
		m.q = m.q[1:]
		m.bytes -= len(msg.Payload) + messageCost
		m.mu.Unlock()
		p := Procedure{msg.Header.Prog, msg.Header.Vers, msg.Header.Proc}
		if h := m.c.cfg.Handlers.message(p); h != nil {
			m.deliver(h, msg)
		} else {
			m.c.cfg.log.Debug("virtrpc: no handler for message", "procedure", p)
		}
		m.c.mem.give(msg.charged)
	}
}

func (m *messageQueue) deliver(h MessageHandler, msg *Message) {
	defer func() {
		if r := recover(); r != nil {
			m.c.cfg.log.Error("virtrpc: message handler panic", "panic", r)
		}
	}()
	h(m.c.handlerCtx, msg)
}
