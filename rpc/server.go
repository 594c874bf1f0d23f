package rpc

import (
	"context"
	"errors"
	"net"
	"sync"
)

// Listener accepts connections; net.Listener and the transport package's
// listeners satisfy it.
type Listener interface {
	Accept() (net.Conn, error)
	Close() error
	Addr() net.Addr
}

// Serve accepts connections on l and serves each with Server(nc, opts),
// calling onConn (if not nil) with every new connection. It returns when ctx
// ends or l fails, after closing l and every connection it accepted and
// waiting for them.
func Serve(ctx context.Context, l Listener, opts *Options, onConn func(*Conn)) error {
	var (
		mu    sync.Mutex
		conns = map[*Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	var err error
	for {
		nc, aerr := l.Accept()
		if aerr != nil {
			err = aerr
			break
		}
		c := Server(nc, opts)
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-c.Done()
			c.wait()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
		if onConn != nil {
			onConn(c)
		}
	}
	_ = l.Close()
	mu.Lock()
	all := make([]*Conn, 0, len(conns))
	for c := range conns {
		all = append(all, c)
	}
	mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
	wg.Wait()
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		return ctx.Err()
	}
	return err
}
