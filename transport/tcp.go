package transport

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"syscall"
	"time"
)

// DefaultNotSentLowat is the TCP_NOTSENT_LOWAT applied when
// [TCPOptions.NotSentLowat] is zero: at most 32 KiB sit unsent in the
// socket, so a small call queued behind bulk data waits for at most that much
// to drain. Measured over TLS 1.3 on loopback and LAN, 16-64 KiB costs no
// throughput.
const DefaultNotSentLowat = 32 << 10

// TCPOptions tunes TCP sockets. A nil *TCPOptions and the zero value both
// mean the defaults documented on each field.
//
// Socket buffer sizes (SO_SNDBUF, SO_RCVBUF) are deliberately not offered:
// shrinking them caps throughput, and TCP_NOTSENT_LOWAT already bounds the
// queueing delay they would be shrunk to fix.
type TCPOptions struct {
	// NotSentLowat is the TCP_NOTSENT_LOWAT socket option in bytes: how
	// much data may sit in the kernel's send queue unsent before writes
	// block. 0 means DefaultNotSentLowat; negative leaves the kernel
	// default (on Linux the net.ipv4.tcp_notsent_lowat sysctl, unlimited
	// unless changed). Only Linux applies it; elsewhere it is ignored.
	NotSentLowat int

	// DisableNoDelay turns Nagle's algorithm back on. By default
	// TCP_NODELAY is set, so small calls leave without delay.
	DisableNoDelay bool

	// KeepAlive is the TCP keep-alive idle time and probe interval. 0 keeps
	// Go's default (enabled, 15s) for connections this package dials or
	// accepts, and leaves other connections alone in [Tune]; negative
	// disables keep-alives.
	KeepAlive time.Duration
}

func (o *TCPOptions) notSentLowat() int {
	if o == nil || o.NotSentLowat == 0 {
		return DefaultNotSentLowat
	}
	return o.NotSentLowat
}

func (o *TCPOptions) noDelay() bool { return o == nil || !o.DisableNoDelay }

func (o *TCPOptions) keepAlive() time.Duration {
	if o == nil {
		return 0
	}
	return o.KeepAlive
}

// clone returns a private copy so later changes by the caller do not race
// with a listener still using the options.
func (o *TCPOptions) clone() *TCPOptions {
	if o == nil {
		return nil
	}
	c := *o
	return &c
}

// DialTCP connects to addr ("host:port") over TCP and applies opts with
// [Tune] before returning. ctx bounds name resolution and connecting only.
func DialTCP(ctx context.Context, addr string, opts *TCPOptions) (net.Conn, error) {
	c, err := dialTCP(ctx, "tcp", addr, opts)
	if err != nil {
		return nil, err // not a typed nil *net.TCPConn
	}
	return c, nil
}

func dialTCP(ctx context.Context, network, addr string, opts *TCPOptions) (*net.TCPConn, error) {
	d := net.Dialer{KeepAlive: opts.keepAlive()}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if err := Tune(c, opts); err != nil {
		c.Close()
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// ListenTCP listens on addr ("host:port"; port 0 picks one) over TCP. Every
// connection its Accept returns is already tuned with opts, which are copied.
// ctx bounds setting up the listener, not its lifetime: close the listener to
// stop it.
//
// TCP_NOTSENT_LOWAT is also set on the listening socket, so a kernel that
// lacks it makes ListenTCP fail rather than every Accept. Should tuning an
// accepted connection still fail (the peer already reset it, say), Accept
// closes that connection and waits for the next one instead of returning an
// error that would stop a typical accept loop.
func ListenTCP(ctx context.Context, addr string, opts *TCPOptions) (net.Listener, error) {
	return listenTCP(ctx, "tcp", addr, opts)
}

func listenTCP(ctx context.Context, network, addr string, opts *TCPOptions) (net.Listener, error) {
	opts = opts.clone()
	lc := net.ListenConfig{KeepAlive: opts.keepAlive()}
	if lowat := opts.notSentLowat(); lowat >= 0 {
		if err := checkNotSentLowat(lowat); err != nil {
			return nil, err
		}
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			return setNotSentLowat(rc, lowat)
		}
	}
	ln, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	return &tcpListener{Listener: ln, opts: opts}, nil
}

// tcpListener tunes each accepted connection.
type tcpListener struct {
	net.Listener
	opts *TCPOptions
}

// Accept returns the next tuned connection. Its errors are the underlying
// listener's, unwrapped, as callers of net.Listener expect.
func (l *tcpListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := Tune(c, l.opts); err != nil {
			c.Close()
			continue
		}
		return c, nil
	}
}

// Tune applies opts to c if c is a *net.TCPConn or wraps one through a
// NetConn() method (as *tls.Conn and [LibvirtServerConn] do). For any other
// connection, unix sockets included, it does nothing and returns nil. Tune
// may be called again to change the settings.
func Tune(c net.Conn, opts *TCPOptions) error {
	tc := tcpConn(c)
	if tc == nil {
		return nil
	}
	if err := tc.SetNoDelay(opts.noDelay()); err != nil {
		return fmt.Errorf("transport: set TCP_NODELAY: %w", err)
	}
	if lowat := opts.notSentLowat(); lowat >= 0 {
		if err := SetNotSentLowat(tc, lowat); err != nil {
			return err
		}
	}
	switch ka := opts.keepAlive(); {
	case ka > 0:
		err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: ka, Interval: ka})
		if err != nil {
			return fmt.Errorf("transport: set TCP keep-alive: %w", err)
		}
	case ka < 0:
		if err := tc.SetKeepAlive(false); err != nil {
			return fmt.Errorf("transport: disable TCP keep-alive: %w", err)
		}
	}
	return nil
}

// SetNotSentLowat sets TCP_NOTSENT_LOWAT on c, which must be a
// *net.TCPConn or wrap one through a NetConn() method; otherwise it returns
// an error matching [errors.ErrUnsupported]. On Linux it calls setsockopt;
// on other systems it only validates its arguments. bytes must be between 0
// and math.MaxInt32. A closed c gives an error matching [net.ErrClosed].
func SetNotSentLowat(c net.Conn, bytes int) error {
	if err := checkNotSentLowat(bytes); err != nil {
		return err
	}
	tc := tcpConn(c)
	if tc == nil {
		return fmt.Errorf("transport: set TCP_NOTSENT_LOWAT on %T: not a TCP connection: %w", c, errors.ErrUnsupported)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("transport: set TCP_NOTSENT_LOWAT: %w", err)
	}
	return setNotSentLowat(rc, bytes)
}

func checkNotSentLowat(bytes int) error {
	if bytes < 0 || bytes > math.MaxInt32 {
		return fmt.Errorf("transport: TCP_NOTSENT_LOWAT %d out of range [0, %d]", bytes, math.MaxInt32)
	}
	return nil
}

// tcpConn finds the *net.TCPConn under c, following NetConn() wrappers.
func tcpConn(c net.Conn) *net.TCPConn {
	for range 16 { // bound the walk in case a wrapper returns itself
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
