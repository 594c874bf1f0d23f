package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
)

// Dialer is what the rpc layer needs from any transport: TCP, unix, TLS, and
// later SSH. *net.Dialer and *tls.Dialer satisfy it as well as [NetDialer]
// and [TLSDialer].
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

var (
	_ Dialer = (*net.Dialer)(nil)
	_ Dialer = (*tls.Dialer)(nil)
	_ Dialer = (*NetDialer)(nil)
	_ Dialer = (*TLSDialer)(nil)
)

// NetDialer dials plain connections: "tcp", "tcp4" and "tcp6" tuned with
// TCP as by [DialTCP], and "unix" as by [DialUnix]. The zero value uses the
// default [TCPOptions].
type NetDialer struct {
	TCP *TCPOptions
}

// DialContext connects to addr over network.
func (d *NetDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err := dialTCP(ctx, network, addr, d.TCP)
		if err != nil {
			return nil, err
		}
		return c, nil
	case "unix":
		return DialUnix(ctx, addr)
	default:
		return nil, fmt.Errorf("transport: dial %s: %w", addr, net.UnknownNetworkError(network))
	}
}

// TLSDialer dials with [DialTLS] and Options.
type TLSDialer struct {
	Options *TLSOptions
}

// DialContext connects to addr over network and completes the TLS session
// setup; the returned net.Conn is a *tls.Conn.
func (d *TLSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := DialTLS(ctx, network, addr, d.Options)
	if err != nil {
		return nil, err // not a typed nil *tls.Conn
	}
	return c, nil
}
