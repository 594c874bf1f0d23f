package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// aLongTimeAgo is a write deadline that fails a blocked write at once.
var aLongTimeAgo = time.Unix(1, 0)

// Client is a QMP connection: JSON lines over a unix socket. Commands may
// be issued from many goroutines at once; replies are matched to commands
// by id; events are buffered (the oldest dropped beyond MaxEvents) so that
// a reader who is not waiting never blocks the connection.
type Client struct {
	conn net.Conn
	// Version is QEMU's, from the greeting.
	Version Version

	wmu sync.Mutex // one command line written at a time

	mu      sync.Mutex
	next    uint64
	pending map[string]chan reply
	events  []Event
	dropped int64
	evCh    chan struct{} // closed and replaced when an event arrives
	err     error         // why the connection ended
	done    chan struct{}
}

// MaxEvents is how many unread events a Client keeps.
const MaxEvents = 1024

// Version is QEMU's version as its QMP greeting says.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Event is an asynchronous QMP event, such as MIGRATION or STOP.
type Event struct {
	Name      string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Error is a command's failure as QEMU reports it.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s (%s)", e.Command, e.Desc, e.Class) }

type reply struct {
	ret json.RawMessage
	err *Error
}

// message is any line QEMU sends.
type message struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP"`
	ID     *string         `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	Event
}

// Dial connects to QEMU's QMP socket at path, reads the greeting and
// leaves capabilities negotiation mode, all bounded by ctx.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	c := &Client{conn: conn, pending: map[string]chan reply{}, evCh: make(chan struct{}), done: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	dec := json.NewDecoder(bufio.NewReader(conn))
	var greeting message
	err = dec.Decode(&greeting)
	if err == nil && greeting.QMP == nil {
		err = errors.New("no QMP greeting")
	}
	if !stop() || err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	v := greeting.QMP.Version
	c.Version = Version{v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, v.Package}
	go c.read(dec)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// read dispatches replies and buffers events until the connection ends.
func (c *Client) read(dec *json.Decoder) {
	var err error
	for {
		var m message
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.ID != nil:
			c.mu.Lock()
			ch := c.pending[*m.ID]
			delete(c.pending, *m.ID)
			c.mu.Unlock()
			if ch != nil { // else its caller gave up
				ch <- reply{ret: m.Return, err: m.Error}
			}
		case m.Event.Name != "":
			c.mu.Lock()
			if len(c.events) >= MaxEvents {
				c.events = c.events[1:]
				c.dropped++
			}
			c.events = append(c.events, m.Event)
			close(c.evCh)
			c.evCh = make(chan struct{})
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("qmp: connection lost: %w", err)
	}
	c.mu.Unlock()
	close(c.done)
}

// Execute runs command with args (nil: none) and decodes its return value
// into result (nil: ignored). A failure QEMU reports is an *Error. If ctx
// ends first, Execute returns ctx's error; the late reply is dropped.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.next++
	id := strconv.FormatUint(c.next, 10)
	ch := make(chan reply, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}

	line, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id})
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	// The line is small: the write waits only when QEMU stopped reading.
	// ctx interrupts it with a deadline, and a line cut short would break
	// the stream, so the connection is closed then.
	c.wmu.Lock()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.conn.SetWriteDeadline(aLongTimeAgo)
		close(fired)
	})
	_, err = c.conn.Write(append(line, '\n'))
	if !stop() {
		<-fired
		if err == nil {
			_ = c.conn.SetWriteDeadline(time.Time{}) // the deadline came after the line
		}
	}
	c.wmu.Unlock()
	if err != nil {
		forget()
		_ = c.conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	select {
	case r := <-ch:
		if r.err != nil {
			r.err.Command = command
			return r.err
		}
		if result != nil && len(r.ret) > 0 {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decoding the reply: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		forget()
		return ctx.Err()
	case <-c.done:
		forget()
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, c.err)
	}
}

// NextEvent returns the oldest unread event, waiting for one until ctx
// ends or the connection does.
func (c *Client) NextEvent(ctx context.Context) (Event, error) {
	for {
		c.mu.Lock()
		if len(c.events) > 0 {
			ev := c.events[0]
			c.events = c.events[1:]
			c.mu.Unlock()
			return ev, nil
		}
		ch, err := c.evCh, c.err
		c.mu.Unlock()
		if err != nil {
			return Event{}, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-c.done:
		}
	}
}

// Dropped is how many events were dropped because MaxEvents were unread.
func (c *Client) Dropped() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Done is closed when the connection has ended (QEMU exited, or Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection; pending commands fail.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = errors.New("qmp: connection closed")
	}
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	return err
}
