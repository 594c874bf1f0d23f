package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// watchEvery is how often a driver polls QEMU's migration status to notice
// that QEMU itself failed.
const watchEvery = 50 * time.Millisecond

// channels are a driver's connections to QEMU's migration sockets. When
// QEMU reports that its migration failed, they are closed, and their reads
// and writes fail with QEMU's reason instead of a closed connection.
type channels struct {
	mu    sync.Mutex
	conns []net.Conn
	err   error // QEMU's failure, once seen
}

func (cs *channels) add(c net.Conn) *channel {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.conns = append(cs.conns, c)
	return &channel{Conn: c, cs: cs}
}

// fail closes every connection because of err.
func (cs *channels) fail(err error) {
	cs.mu.Lock()
	if cs.err == nil {
		cs.err = err
	}
	conns := cs.conns
	cs.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (cs *channels) closeAll() { cs.fail(errors.New("qemu: migration channel closed")) }

func (cs *channels) reason(err error) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.err != nil {
		return cs.err
	}
	return err
}

// closeWrite half-closes every connection: QEMU reads EOF after the data.
func (cs *channels) closeWrite() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.conns {
		if uc, ok := c.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
	}
}

// channel is one connection; its errors carry QEMU's failure.
type channel struct {
	net.Conn
	cs *channels
}

func (c *channel) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		err = c.cs.reason(err)
	}
	return n, err
}

func (c *channel) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		err = c.cs.reason(err)
	}
	return n, err
}

// watch polls QEMU's migration status and fails cs when QEMU reports a
// failure, until stopped. onStatus, if not nil, gets every status.
func (c *Client) watch(cs *channels, onStatus func(MigrationInfo)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(watchEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mi, err := c.QueryMigrate(ctx)
			if err != nil {
				if ctx.Err() == nil {
					cs.fail(fmt.Errorf("qemu: %w", err))
				}
				return
			}
			if onStatus != nil {
				onStatus(mi)
			}
			if mi.Status == "failed" || mi.Status == "cancelled" {
				cs.fail(fmt.Errorf("qemu: migration %s: %s", mi.Status, mi.ErrorDesc))
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}
