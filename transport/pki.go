package transport

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// Files of libvirt's flat PKI layout: the directory given to libvirtd's
// pkipath, or a client's $HOME/.pki/libvirt.
const (
	LibvirtCACert     = "cacert.pem"
	LibvirtServerCert = "servercert.pem"
	LibvirtServerKey  = "serverkey.pem"
	LibvirtClientCert = "clientcert.pem"
	LibvirtClientKey  = "clientkey.pem"
)

// LoadLibvirtServerConfig builds a TLS 1.3 server config from dir in
// libvirt's flat PKI layout: it presents servercert.pem with serverkey.pem,
// and requires client certificates issued by a CA in cacert.pem and not
// revoked by cacrl.pem, if there is one. Errors from missing files match
// [io/fs.ErrNotExist].
func LoadLibvirtServerConfig(dir string) (*tls.Config, error) {
	pool, verify, err := loadTrust(dir)
	if err != nil {
		return nil, err
	}
	cert, err := loadKeyPair(dir, LibvirtServerCert, LibvirtServerKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,

		VerifyConnection: verify.onConnection(),
	}, nil
}

// LoadLibvirtClientConfig builds a TLS 1.3 client config from dir in
// libvirt's flat PKI layout: it trusts only the CAs in cacert.pem (minus
// what cacrl.pem revokes, if there is one), presents clientcert.pem with
// clientkey.pem, and verifies the server as serverName (a DNS name or an IP
// address; empty lets [DialTLS] take it from the address it dials). Errors
// from missing files match [io/fs.ErrNotExist].
func LoadLibvirtClientConfig(dir, serverName string) (*tls.Config, error) {
	pool, verify, err := loadTrust(dir)
	if err != nil {
		return nil, err
	}
	cert, err := loadKeyPair(dir, LibvirtClientCert, LibvirtClientKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		ServerName:   serverName,
		Certificates: []tls.Certificate{cert},

		VerifyConnection: verify.onConnection(),
	}, nil
}

// loadTrust reads cacert.pem and, as libvirt does, cacrl.pem if it exists.
func loadTrust(dir string) (*x509.CertPool, verifyFunc, error) {
	path := filepath.Join(dir, LibvirtCACert)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: libvirt CA: %w", err)
	}
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("transport: libvirt CA %s: %w", path, err)
		}
		pool.AddCert(ca)
		cas = append(cas, ca)
	}
	if len(cas) == 0 {
		return nil, nil, fmt.Errorf("transport: libvirt CA: no PEM certificate in %s", path)
	}
	verify, err := loadCRL(dir, cas)
	if err != nil {
		return nil, nil, err
	}
	return pool, verify, nil
}

func loadKeyPair(dir, certFile, keyFile string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: libvirt key pair %s, %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}
