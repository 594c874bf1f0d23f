package transport_test

import (
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

// TestLibvirtCRLHoldsOnResumedSessions: a client resuming a TLS session
// skips certificate verification (and VerifyPeerCertificate), so a client
// revoked after it got its ticket was let in again by a server with the
// new cacrl.pem that shares the ticket keys (servers behind one name, or a
// config rebuilt with the keys kept). The check runs on resumptions too.
func TestLibvirtCRLHoldsOnResumedSessions(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	require.NoError(t, p.WriteLibvirtDir(dir))
	before, err := transport.LoadLibvirtServerConfig(dir)
	require.NoError(t, err)
	crl, err := p.RevocationList(p.Client.Leaf)
	require.NoError(t, err)
	writeCRL(t, dir, crl)
	after, err := transport.LoadLibvirtServerConfig(dir)
	require.NoError(t, err)
	keys := [][32]byte{{1, 2, 3}}
	before.SetSessionTicketKeys(keys)
	after.SetSessionTicketKeys(keys)

	client := p.ClientConfig()
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	connect := func(server *tls.Config) (resumed bool, serverErr error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		errc := make(chan error, 1)
		go func() {
			nc, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer nc.Close()
			s := tls.Server(nc, server)
			err = s.Handshake()
			if err == nil {
				_, err = s.Write([]byte{1}) // the ticket goes before it
			}
			errc <- err
		}()
		nc, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		c := tls.Client(nc, client)
		defer c.Close()
		if c.Handshake() == nil {
			_, _ = io.ReadFull(c, make([]byte, 1)) // takes the ticket
		}
		return c.ConnectionState().DidResume, <-errc
	}
	_, err = connect(before)
	require.NoError(t, err)
	resumed, err := connect(after)
	require.ErrorIs(t, err, transport.ErrCertificateRevoked, "resumed: %v", resumed)
}
