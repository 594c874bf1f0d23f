package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// TLSOptions configures [DialTLS] and [ListenTLS]. A nil *TLSOptions means
// the zero value.
type TLSOptions struct {
	// Config is the TLS configuration; it is cloned, never modified. If its
	// MinVersion is zero, TLS 1.3 is required. DialTLS accepts a nil Config
	// (system roots); ListenTLS needs one with a certificate. When dialing
	// TCP with an empty ServerName, the host part of addr is used, as
	// tls.Dial does; over unix sockets ServerName must be set (or
	// InsecureSkipVerify, which you should not do).
	Config *tls.Config

	// TCP tunes the underlying TCP connection; see [TCPOptions]. It is
	// ignored for unix sockets.
	TCP *TCPOptions

	// LibvirtAck speaks libvirt's post-handshake acknowledgement: once the
	// server has accepted the client's certificate it sends one byte, 0x01.
	// DialTLS waits for that byte; connections from ListenTLS send it right
	// after their handshake (see [LibvirtServerConn]), and send no TLS 1.3
	// session tickets, which libvirt's client cannot take before the byte.
	LibvirtAck bool

	// AllowedDNs, on a listener, accepts only clients whose verified
	// certificate's subject DN matches one of these patterns (libvirtd's
	// tls_allowed_dn_list; see [AllowDNs]); the handshake of any other
	// fails with a [*DNError] naming the DN. Nil allows every verified
	// client; an empty, non-nil list allows none. The Config must verify
	// client certificates (tls.RequireAndVerifyClientCert). Ignored by
	// DialTLS.
	AllowedDNs []string
}

func (o *TLSOptions) orZero() *TLSOptions {
	if o == nil {
		return &TLSOptions{}
	}
	return o
}

// DialTLS connects to addr over network ("tcp", "tcp4", "tcp6" or "unix"),
// completes the TLS handshake and, with LibvirtAck, checks libvirt's
// acknowledgement byte, all bounded by ctx. On error nothing is left open.
//
// In TLS 1.3 the server judges the client certificate after the client's
// side of the handshake has finished, so without LibvirtAck a refused client
// certificate surfaces only on the first Read.
func DialTLS(ctx context.Context, network, addr string, opts *TLSOptions) (*tls.Conn, error) {
	opts = opts.orZero()
	cfg, err := clientConfig(opts.Config, network, addr)
	if err != nil {
		return nil, err
	}
	raw, err := dialRaw(ctx, network, addr, opts.TCP)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(newBatchConn(raw), cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("transport: TLS handshake with %s: %w", addr, ctxError(ctx, err))
	}
	if opts.LibvirtAck {
		if err := readLibvirtAck(ctx, tc); err != nil {
			raw.Close()
			return nil, err
		}
	}
	return tc, nil
}

func dialRaw(ctx context.Context, network, addr string, opts *TCPOptions) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err := dialTCP(ctx, network, addr, opts)
		if err != nil {
			return nil, ctxError(ctx, err)
		}
		return c, nil
	case "unix":
		c, err := DialUnix(ctx, addr)
		return c, ctxError(ctx, err)
	default:
		return nil, fmt.Errorf("transport: dial %s: %w", addr, net.UnknownNetworkError(network))
	}
}

func clientConfig(base *tls.Config, network, addr string) (*tls.Config, error) {
	cfg := base.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS13
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		if network == "unix" {
			return nil, errors.New("transport: TLS over a unix socket needs Config.ServerName to verify the server")
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("transport: TLS server name from %q: %w", addr, err)
		}
		cfg.ServerName = host
	}
	return cfg, nil
}

// ListenTLS listens on addr over network ("tcp", "tcp4", "tcp6" or "unix",
// with the stale-socket handling of [ListenUnix]). TCP connections are tuned
// with opts.TCP as by [ListenTCP]. ctx bounds setting up the listener only.
//
// Accept never performs a handshake, so one slow or hostile client cannot
// hold up the others. Without LibvirtAck it returns a *tls.Conn; with it, a
// *[LibvirtServerConn]. Either way the handshake (and acknowledgement) runs
// on the connection's first Read or Write, or earlier and bounded by a
// context when the server calls [Handshake] in its per-connection goroutine,
// which is the recommended pattern.
func ListenTLS(ctx context.Context, network, addr string, opts *TLSOptions) (net.Listener, error) {
	opts = opts.orZero()
	cfg, err := serverConfig(opts.Config)
	if err != nil {
		return nil, err
	}
	if opts.AllowedDNs != nil && cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("transport: TLSOptions.AllowedDNs needs Config.ClientAuth = tls.RequireAndVerifyClientCert")
	}
	withAllowedDNs(cfg, opts.AllowedDNs)
	if opts.LibvirtAck {
		// libvirt's client reads the acknowledgement byte with one read
		// right after its handshake; a TLS 1.3 session ticket arriving first
		// makes GnuTLS report EAGAIN and virsh fail with "Unable to read TLS
		// confirmation". libvirt clients never resume sessions anyway.
		cfg.SessionTicketsDisabled = true
	}
	var ln net.Listener
	switch network {
	case "tcp", "tcp4", "tcp6":
		ln, err = listenTCP(ctx, network, addr, opts.TCP)
	case "unix":
		ln, err = ListenUnix(ctx, addr)
	default:
		err = fmt.Errorf("transport: listen %s: %w", addr, net.UnknownNetworkError(network))
	}
	if err != nil {
		return nil, err
	}
	return &tlsListener{Listener: ln, config: cfg, libvirtAck: opts.LibvirtAck}, nil
}

func serverConfig(base *tls.Config) (*tls.Config, error) {
	if base == nil {
		return nil, errors.New("transport: ListenTLS needs TLSOptions.Config")
	}
	if len(base.Certificates) == 0 && base.GetCertificate == nil && base.GetConfigForClient == nil {
		return nil, errors.New("transport: ListenTLS needs a server certificate in TLSOptions.Config")
	}
	cfg := base.Clone()
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS13
	}
	return cfg, nil
}

type tlsListener struct {
	net.Listener
	config     *tls.Config
	libvirtAck bool
}

// Accept returns the next connection without handshaking. Its errors are
// the underlying listener's, unwrapped.
func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := tls.Server(newBatchConn(c), l.config)
	if l.libvirtAck {
		return &LibvirtServerConn{conn: tc}, nil
	}
	return tc, nil
}

// Handshake runs c's TLS handshake bounded by ctx, if it has not run yet.
// For a *[LibvirtServerConn] that includes sending the acknowledgement. c
// may be anything with a HandshakeContext method (such as *tls.Conn);
// for other connections, plain TCP or unix, Handshake does nothing and
// returns nil, so a server can call it whatever the transport. If ctx ends
// first, c is closed and the error matches ctx's error.
func Handshake(ctx context.Context, c net.Conn) error {
	h, ok := c.(interface {
		HandshakeContext(context.Context) error
	})
	if !ok {
		return nil
	}
	if err := h.HandshakeContext(ctx); err != nil {
		if _, ours := c.(*LibvirtServerConn); ours {
			return err // already wrapped
		}
		return fmt.Errorf("transport: TLS handshake with %s: %w", c.RemoteAddr(), ctxError(ctx, err))
	}
	return nil
}
