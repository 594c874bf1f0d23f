// Package testcert generates a throwaway public key infrastructure for tests
// and examples: one certificate authority, one server certificate and one
// client certificate, all ECDSA P-256 so that generation takes milliseconds.
//
// The certificates carry the extensions that libvirt's GnuTLS checks insist
// on (critical basicConstraints and keyUsage on the CA, serverAuth and
// clientAuth extended key usages on the leaves), so a PKI written with
// [PKI.WriteLibvirtDir] can also be fed to a real libvirtd or virsh.
//
// Never use these certificates outside tests: the private keys live in
// memory and on disk unprotected, and the CA key stays in memory to sign
// revocation lists.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServerName is the DNS name in the server certificate. Clients dialing
// 127.0.0.1, ::1 or a unix socket should verify against it.
const ServerName = "localhost"

// ClientCommonName is the subject common name of the client certificate.
const ClientCommonName = "virtrpc-client"

// PKI is a CA plus one server and one client certificate issued by it.
type PKI struct {
	CACert *x509.Certificate
	CAPEM  []byte

	ServerCertPEM, ServerKeyPEM []byte
	ClientCertPEM, ClientKeyPEM []byte

	Server, Client tls.Certificate

	// Pool holds only CACert. It is shared by the configs this PKI returns.
	Pool *x509.CertPool

	caKey *ecdsa.PrivateKey
}

// New generates a fresh PKI. Certificates are valid from one hour ago (to
// tolerate clock skew) until 24 hours from now.
func New() (*PKI, error) {
	now := time.Now()
	notBefore, notAfter := now.Add(-time.Hour), now.Add(24*time.Hour)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testcert: generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "virtrpc test CA", Organization: []string{"virtrpc"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true, // Go always marks basicConstraints critical
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign, // marked critical
	}
	caDER, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("testcert: parse CA certificate: %w", err)
	}

	p := &PKI{
		CACert: caCert,
		CAPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Pool:   x509.NewCertPool(),
		caKey:  caKey,
	}
	p.Pool.AddCert(caCert)

	leafUsage := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	p.ServerCertPEM, p.ServerKeyPEM, p.Server, err = leaf(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: ServerName, Organization: []string{"virtrpc"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    leafUsage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{ServerName},
	})
	if err != nil {
		return nil, fmt.Errorf("testcert: server certificate: %w", err)
	}
	p.ClientCertPEM, p.ClientKeyPEM, p.Client, err = leaf(caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: ClientCommonName, Organization: []string{"virtrpc"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    leafUsage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("testcert: client certificate: %w", err)
	}
	return p, nil
}

// RevocationList returns a PEM "X509 CRL" signed by the CA that revokes
// the given certificates (for example p.Client.Leaf), as libvirt's
// cacrl.pem holds.
func (p *PKI) RevocationList(revoked ...*x509.Certificate) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, p.CACert, p.caKey)
	if err != nil {
		return nil, fmt.Errorf("testcert: revocation list: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// IssueClient issues another client certificate by the CA, for subject
// (a DN test's odd attributes, say); rawSubject, if not nil, is the
// subject's DER instead (for string types pkix.Name does not write).
func (p *PKI) IssueClient(subject pkix.Name, rawSubject []byte) (tls.Certificate, error) {
	now := time.Now()
	_, _, pair, err := leaf(p.CACert, p.caKey, &x509.Certificate{
		Subject:     subject,
		RawSubject:  rawSubject,
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return pair, fmt.Errorf("testcert: client certificate: %w", err)
	}
	return pair, nil
}

// leaf issues a certificate for a fresh key and returns it as PEM and as a
// ready tls.Certificate.
func leaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certPEM, keyPEM []byte, pair tls.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, pair, fmt.Errorf("generate key: %w", err)
	}
	der, err := sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, pair, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, pair, fmt.Errorf("marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, pair, fmt.Errorf("key pair: %w", err)
	}
	return certPEM, keyPEM, pair, nil
}

// sign gives tmpl a random serial number and signs it with parent's key.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1)) // never zero
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return der, nil
}

// ServerConfig returns a fresh TLS 1.3 server config presenting the server
// certificate and requiring a client certificate issued by the CA.
func (p *PKI) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.Pool,
	}
}

// ClientConfig returns a fresh TLS 1.3 client config that trusts only the
// CA, verifies the server as [ServerName] and presents the client
// certificate.
func (p *PKI) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      p.Pool,
		ServerName:   ServerName,
		Certificates: []tls.Certificate{p.Client},
	}
}

// Files in libvirt's flat PKI layout (the layout of libvirt's pkipath
// option and of $HOME/.pki/libvirt).
const (
	CACertFile     = "cacert.pem"
	ServerCertFile = "servercert.pem"
	ServerKeyFile  = "serverkey.pem"
	ClientCertFile = "clientcert.pem"
	ClientKeyFile  = "clientkey.pem"
)

// WriteLibvirtDir writes the PKI into dir in libvirt's flat layout, creating
// dir if needed. Certificates are written 0644 and private keys 0600.
func (p *PKI) WriteLibvirtDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testcert: %w", err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CACertFile, p.CAPEM, 0o644},
		{ServerCertFile, p.ServerCertPEM, 0o644},
		{ServerKeyFile, p.ServerKeyPEM, 0o600},
		{ClientCertFile, p.ClientCertPEM, 0o644},
		{ClientKeyFile, p.ClientKeyPEM, 0o600},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, f.data, f.perm); err != nil {
			return fmt.Errorf("testcert: %w", err)
		}
		// WriteFile applies perm only when creating; enforce it on rewrite too.
		if err := os.Chmod(path, f.perm); err != nil {
			return fmt.Errorf("testcert: %w", err)
		}
	}
	return nil
}
