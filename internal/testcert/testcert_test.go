package testcert_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/testcert"
)

// handshake runs a TLS handshake between a client and a server config over a
// fresh listener on network/addr, exchanges one byte each way, and returns
// the client's and the server's handshake errors.
func handshake(t *testing.T, network, addr string, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	require.NoError(t, err)
	defer ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	serverDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverDone <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		if err := tc.HandshakeContext(ctx); err != nil {
			serverDone <- err
			return
		}
		_, err = tc.Write([]byte{1})
		serverDone <- err
	}()

	raw, err := (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	tc := tls.Client(raw, client)
	clientErr = tc.HandshakeContext(ctx)
	if clientErr == nil {
		// In TLS 1.3 the server judges the client certificate after the
		// client's handshake is done; read to learn its verdict.
		var b [1]byte
		_, clientErr = io.ReadFull(tc, b[:])
		if clientErr == nil {
			assert.Equal(t, uint16(tls.VersionTLS13), tc.ConnectionState().Version)
		}
	}
	raw.Close()
	return clientErr, <-serverDone
}

func TestHandshake(t *testing.T) {
	p, err := testcert.New()
	require.NoError(t, err)

	t.Run("tcp4", func(t *testing.T) {
		cerr, serr := handshake(t, "tcp", "127.0.0.1:0", p.ServerConfig(), p.ClientConfig())
		require.NoError(t, cerr)
		require.NoError(t, serr)
	})
	t.Run("tcp6", func(t *testing.T) {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		ln.Close()
		// Verify by IP SAN rather than DNS name.
		cfg := p.ClientConfig()
		cfg.ServerName = "::1"
		cerr, serr := handshake(t, "tcp6", "[::1]:0", p.ServerConfig(), cfg)
		require.NoError(t, cerr)
		require.NoError(t, serr)
	})
	t.Run("unix", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		cerr, serr := handshake(t, "unix", sock, p.ServerConfig(), p.ClientConfig())
		require.NoError(t, cerr)
		require.NoError(t, serr)
	})
}

func TestRejectsForeignPKI(t *testing.T) {
	p, err := testcert.New()
	require.NoError(t, err)
	other, err := testcert.New()
	require.NoError(t, err)

	t.Run("foreign server", func(t *testing.T) {
		cerr, serr := handshake(t, "tcp", "127.0.0.1:0", other.ServerConfig(), p.ClientConfig())
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, cerr, &unknown)
		assert.Error(t, serr)
	})
	t.Run("foreign client", func(t *testing.T) {
		cfg := other.ClientConfig()
		cfg.RootCAs = p.Pool // trust the server, present a foreign client cert
		cerr, serr := handshake(t, "tcp", "127.0.0.1:0", p.ServerConfig(), cfg)
		assert.Error(t, cerr)
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, serr, &unknown)
	})
	t.Run("no client cert", func(t *testing.T) {
		cfg := p.ClientConfig()
		cfg.Certificates = nil
		cerr, serr := handshake(t, "tcp", "127.0.0.1:0", p.ServerConfig(), cfg)
		assert.Error(t, cerr)
		assert.Error(t, serr)
	})
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

func critical(t *testing.T, c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	t.Helper()
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	t.Fatalf("%s: extension %v missing", c.Subject.CommonName, oid)
	return false
}

// TestCertificateProfile pins the settings libvirt's GnuTLS checks need.
func TestCertificateProfile(t *testing.T) {
	p, err := testcert.New()
	require.NoError(t, err)

	ca := p.CACert
	assert.True(t, ca.IsCA)
	assert.True(t, critical(t, ca, oidBasicConstraints))
	assert.True(t, critical(t, ca, oidKeyUsage))
	assert.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, ca.KeyUsage)

	server, err := x509.ParseCertificate(p.Server.Certificate[0])
	require.NoError(t, err)
	client, err := x509.ParseCertificate(p.Client.Certificate[0])
	require.NoError(t, err)

	for _, c := range []*x509.Certificate{server, client} {
		assert.False(t, c.IsCA)
		assert.True(t, critical(t, c, oidKeyUsage))
		assert.Equal(t, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment, c.KeyUsage)
		assert.True(t, c.NotBefore.Before(time.Now().Add(-59*time.Minute)))
		assert.True(t, c.NotAfter.After(time.Now().Add(23*time.Hour)))
		require.NoError(t, c.CheckSignatureFrom(ca))
	}

	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, server.ExtKeyUsage)
	assert.Equal(t, "localhost", server.Subject.CommonName)
	assert.Equal(t, []string{"localhost"}, server.DNSNames)
	require.Len(t, server.IPAddresses, 2)
	assert.True(t, server.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)))
	assert.True(t, server.IPAddresses[1].Equal(net.IPv6loopback))

	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, client.ExtKeyUsage)
	assert.Equal(t, "virtrpc-client", client.Subject.CommonName)
}

func TestWriteLibvirtDir(t *testing.T) {
	p, err := testcert.New()
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "pki")
	require.NoError(t, p.WriteLibvirtDir(dir))
	require.NoError(t, p.WriteLibvirtDir(dir), "rewriting must work")

	want := map[string]struct {
		data []byte
		perm os.FileMode
	}{
		"cacert.pem":     {p.CAPEM, 0o644},
		"servercert.pem": {p.ServerCertPEM, 0o644},
		"serverkey.pem":  {p.ServerKeyPEM, 0o600},
		"clientcert.pem": {p.ClientCertPEM, 0o644},
		"clientkey.pem":  {p.ClientKeyPEM, 0o600},
	}
	for name, w := range want {
		path := filepath.Join(dir, name)
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, w.data, got, name)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, w.perm, fi.Mode().Perm(), name)
	}

	_, err = tls.LoadX509KeyPair(filepath.Join(dir, "servercert.pem"), filepath.Join(dir, "serverkey.pem"))
	require.NoError(t, err)
	_, err = tls.LoadX509KeyPair(filepath.Join(dir, "clientcert.pem"), filepath.Join(dir, "clientkey.pem"))
	require.NoError(t, err)
}
