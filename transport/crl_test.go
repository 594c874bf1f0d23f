package transport_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/transport"
)

// writeCRL puts a cacrl.pem into a libvirt PKI dir, as libvirt's docs lay
// it out.
func writeCRL(t *testing.T, dir string, crl []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, transport.LibvirtCACRL), crl, 0o600))
}

// handshakeErr accepts one connection and reports its handshake's error.
func handshakeErr(ln net.Listener) <-chan error {
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		got <- c.(*tls.Conn).Handshake()
	}()
	return got
}

// A libvirt PKI dir with a cacrl.pem revoking the client certificate: the
// server refuses that client, as libvirtd does, and says why; a CRL that
// revokes something else lets it in.
func TestLibvirtCRLRefusesARevokedClient(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name    string
		revoked bool
	}{{"client revoked", true}, {"another certificate revoked", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, p.WriteLibvirtDir(dir))
			other := newPKI(t).Client.Leaf // same CA subject, another serial
			revoke := other
			if tc.revoked {
				revoke = p.Client.Leaf
			}
			crl, err := p.RevocationList(revoke)
			require.NoError(t, err)
			writeCRL(t, dir, crl)

			serverCfg, err := transport.LoadLibvirtServerConfig(dir)
			require.NoError(t, err)
			clientCfg, err := transport.LoadLibvirtClientConfig(dir, testcert.ServerName)
			require.NoError(t, err)
			ctx := testCtx(t)
			ln, err := transport.ListenTCP(ctx, "127.0.0.1:0", nil)
			require.NoError(t, err)
			defer ln.Close()
			tln := tls.NewListener(ln, serverCfg)
			serverErr := handshakeErr(tln)

			c, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: clientCfg})
			require.NoError(t, err, "the client's side of a TLS 1.3 handshake ends before the server judges it")
			defer c.Close()
			if tc.revoked {
				require.ErrorIs(t, <-serverErr, transport.ErrCertificateRevoked)
				_, err = c.Read(make([]byte, 1))
				assert.Error(t, err, "the refused client learns it on its first read")
			} else {
				require.NoError(t, <-serverErr)
			}
		})
	}
}

// The client side honours cacrl.pem too: a revoked server is refused.
func TestLibvirtCRLRefusesARevokedServer(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	require.NoError(t, p.WriteLibvirtDir(dir))
	crl, err := p.RevocationList(p.Server.Leaf)
	require.NoError(t, err)
	writeCRL(t, dir, crl)
	clientCfg, err := transport.LoadLibvirtClientConfig(dir, testcert.ServerName)
	require.NoError(t, err)

	ctx := testCtx(t)
	ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig()})
	require.NoError(t, err)
	serve(t, ln, echo)
	_, err = transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: clientCfg})
	require.ErrorIs(t, err, transport.ErrCertificateRevoked)
}

// A cacrl.pem that is there but cannot be trusted is an error, never
// silently ignored.
func TestLibvirtCRLErrors(t *testing.T) {
	p := newPKI(t)
	foreign, err := newPKI(t).RevocationList()
	require.NoError(t, err)
	for _, tc := range []struct {
		name, crl, want string
	}{
		{"not PEM", "garbage", "no PEM X509 CRL"},
		{"signed by another CA", string(foreign), "signed"},
		{"corrupt", "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "cacrl.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, p.WriteLibvirtDir(dir))
			writeCRL(t, dir, []byte(tc.crl))
			_, err := transport.LoadLibvirtServerConfig(dir)
			assert.ErrorContains(t, err, tc.want)
			_, err = transport.LoadLibvirtClientConfig(dir, "")
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
