package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/transport"
)

// env is what every case shares: certificates, keys, and the emulated WAN
// when it is on.
type env struct {
	pki *testcert.PKI
	ssh *sshKeys
	wan *wanParams // nil on loopback

	mu     sync.Mutex
	cur    *wan // the links of the current measurement
	relays []*relay
}

func newEnv(wan *wanParams) (*env, error) {
	pki, err := testcert.New()
	if err != nil {
		return nil, err
	}
	keys, err := newSSHKeys()
	if err != nil {
		return nil, err
	}
	if wan != nil {
		warmRelay(*wan)
	}
	return &env{pki: pki, ssh: keys, wan: wan}, nil
}

// listen opens a loopback TCP listener tuned as the transport package tunes
// sockets (TCP_NODELAY, TCP_NOTSENT_LOWAT 32 KiB).
func (e *env) listen(ctx context.Context) (net.Listener, error) {
	return transport.ListenTCP(ctx, "127.0.0.1:0", nil)
}

// dial connects to addr, through a new WAN relay when the WAN is on.
func (e *env) dial(ctx context.Context, addr string) (net.Conn, error) {
	if e.wan != nil {
		e.mu.Lock()
		if e.cur == nil {
			e.cur = newWAN(*e.wan)
		}
		w := e.cur
		e.mu.Unlock()
		r, err := newRelay(ctx, addr, w)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		e.relays = append(e.relays, r)
		e.mu.Unlock()
		addr = r.addr()
	}
	return transport.DialTCP(ctx, addr, nil)
}

// cleanup stops the relays and links of the last measurement.
func (e *env) cleanup() {
	e.mu.Lock()
	rs, w := e.relays, e.cur
	e.relays, e.cur = nil, nil
	e.mu.Unlock()
	for _, r := range rs {
		r.close()
	}
	if w != nil {
		w.stop()
	}
}

// tcpPair returns both ends of one TCP connection (through the WAN if on).
func (e *env) tcpPair(ctx context.Context) (client, server net.Conn, err error) {
	l, err := e.listen(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	type acc struct {
		c   net.Conn
		err error
	}
	ch := make(chan acc, 1)
	go func() {
		c, err := l.Accept()
		ch <- acc{c, err}
	}()
	client, err = e.dial(ctx, l.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	a := <-ch
	if a.err != nil {
		client.Close()
		return nil, nil, a.err
	}
	return client, a.c, nil
}

// tlsPair returns both ends of one TLS 1.3 connection, handshake done.
func (e *env) tlsPair(ctx context.Context) (client, server *tls.Conn, err error) {
	cc, sc, err := e.tcpPair(ctx)
	if err != nil {
		return nil, nil, err
	}
	client = tls.Client(cc, e.pki.ClientConfig())
	server = tls.Server(sc, e.pki.ServerConfig())
	errs := make(chan error, 1)
	go func() { errs <- server.HandshakeContext(ctx) }()
	cerr := client.HandshakeContext(ctx)
	serr := <-errs
	if err := errors.Join(cerr, serr); err != nil {
		cc.Close()
		sc.Close()
		return nil, nil, err
	}
	return client, server, nil
}

// cipherName is the negotiated cipher suite of a TLS connection.
func cipherName(c *tls.Conn) string {
	return tls.CipherSuiteName(c.ConnectionState().CipherSuite)
}
