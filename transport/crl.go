package transport

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LibvirtCACRL is the optional revocation list of libvirt's PKI layout.
// libvirt loads it when it exists, and so do LoadLibvirtServerConfig and
// LoadLibvirtClientConfig: a peer whose certificate it revokes is refused.
const LibvirtCACRL = "cacrl.pem"

// ErrCertificateRevoked is matched by the handshake error for a peer whose
// certificate cacrl.pem revokes.
var ErrCertificateRevoked = errors.New("transport: peer certificate revoked by " + LibvirtCACRL)

// verifyFunc is tls.Config.VerifyPeerCertificate's type.
type verifyFunc func(rawCerts [][]byte, chains [][]*x509.Certificate) error

// loadCRL reads dir's cacrl.pem, if there is one, and returns the check
// that refuses a peer whose every verified chain holds a revoked
// certificate; nil without a CRL. A CRL that is present but unreadable, or
// not signed by one of the CAs, is an error rather than silently ignored.
func loadCRL(dir string, cas []*x509.Certificate) (verifyFunc, error) {
	path := filepath.Join(dir, LibvirtCACRL)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transport: libvirt CRL: %w", err)
	}
	revoked := map[string]bool{} // issuer DER + "/" + serial
	lists := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("transport: libvirt CRL %s: %w", path, err)
		}
		if err := signedByOneOf(crl, cas); err != nil {
			return nil, fmt.Errorf("transport: libvirt CRL %s: %w", path, err)
		}
		for _, e := range crl.RevokedCertificateEntries {
			revoked[string(crl.RawIssuer)+"/"+e.SerialNumber.String()] = true
		}
		lists++
	}
	if lists == 0 {
		return nil, fmt.Errorf("transport: libvirt CRL: no PEM X509 CRL in %s", path)
	}
	return func(_ [][]byte, chains [][]*x509.Certificate) error {
	next:
		for _, chain := range chains {
			for _, c := range chain {
				if revoked[string(c.RawIssuer)+"/"+c.SerialNumber.String()] {
					continue next
				}
			}
			return nil // one chain without a revoked certificate
		}
		return ErrCertificateRevoked
	}, nil
}

// onConnection is v as a tls.Config.VerifyConnection (nil for nil): unlike
// VerifyPeerCertificate, that runs on resumed sessions too, so a peer
// revoked after it got a session ticket cannot resume past the CRL.
func (v verifyFunc) onConnection() func(tls.ConnectionState) error {
	if v == nil {
		return nil
	}
	return func(cs tls.ConnectionState) error { return v(nil, cs.VerifiedChains) }
}

func signedByOneOf(crl *x509.RevocationList, cas []*x509.Certificate) error {
	err := errors.New("no CA in " + LibvirtCACert + " signed it")
	for _, ca := range cas {
		if err = crl.CheckSignatureFrom(ca); err == nil {
			return nil
		}
	}
	return err
}
