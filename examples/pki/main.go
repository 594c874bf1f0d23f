// Command pki makes a PKI directory in libvirt's layout for a first-time
// user, without openssl: a CA, a server certificate and a client
// certificate, with the extensions libvirt's GnuTLS checks insist on
// (critical basicConstraints and keyUsage on the CA; digitalSignature,
// keyEncipherment and serverAuth or clientAuth on the leaves), so libvirtd
// and virsh accept them as they are.
//
//	go run ./examples/pki -dir DIR [-hosts localhost,127.0.0.1,::1] [-client-cn NAME] [-days 365]
//
// DIR then holds cacert.pem, cakey.pem, servercert.pem, serverkey.pem,
// clientcert.pem and clientkey.pem (keys mode 0600): point libvirtd's
// key_file, cert_file and ca_file (or a client's pkipath) at it, and
// transport.LoadLibvirtServerConfig / LoadLibvirtClientConfig read it.
// Existing files are never overwritten unless -force is given.
//
// cakey.pem signs certificates: whoever holds it can make a client
// certificate the server accepts. Keep it on the machine that issues them;
// a client needs only cacert.pem, clientcert.pem and clientkey.pem in its
// pkipath, a server cacert.pem, servercert.pem and serverkey.pem.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Options say what to make; the zero value is not usable (Dir is needed).
type Options struct {
	Dir      string
	Hosts    []string // DNS names and IP addresses of the server certificate
	ClientCN string   // the client certificate's common name
	Org      string   // the organization of every subject
	Validity time.Duration
	Force    bool // overwrite existing files
}

func main() {
	o := Options{}
	hosts := flag.String("hosts", "localhost,127.0.0.1,::1", "server certificate names and addresses, comma-separated (the host name is added)")
	flag.StringVar(&o.Dir, "dir", "", "directory to write (required)")
	flag.StringVar(&o.ClientCN, "client-cn", "virtrpc-client", "client certificate common name")
	flag.StringVar(&o.Org, "org", "virtrpc", "organization of the subjects")
	days := flag.Int("days", 365, "validity in days")
	flag.BoolVar(&o.Force, "force", false, "overwrite existing files")
	flag.Parse()
	if o.Dir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: pki -dir DIR [-hosts h1,h2] [-client-cn NAME] [-days N] [-force]")
		os.Exit(2)
	}
	o.Hosts = strings.Split(*hosts, ",")
	if h, err := os.Hostname(); err == nil && h != "" {
		o.Hosts = append(o.Hosts, h)
	}
	o.Validity = time.Duration(*days) * 24 * time.Hour
	if err := Make(o); err != nil {
		fmt.Fprintln(os.Stderr, "pki:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote a CA, a server certificate for %s and a client certificate for CN=%s,O=%s in %s\n",
		strings.Join(o.Hosts, ", "), o.ClientCN, o.Org, o.Dir)
}

// Make writes the PKI.
func Make(o Options) error {
	if o.Validity <= 0 {
		return errors.New("validity must be positive")
	}
	files := map[string][]byte{}
	now := time.Now()
	nb, na := now.Add(-time.Hour), now.Add(o.Validity)

	caKey, caDER, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: o.Org + " CA", Organization: []string{o.Org}},
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true, // Go marks it critical
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign, // critical
	}, nil, nil)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	files["cacert.pem"], files["cakey.pem"] = pemCert(caDER), pemKey(caKey)

	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: o.Hosts[0], Organization: []string{o.Org}},
		NotBefore:   nb,
		NotAfter:    na,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range o.Hosts {
		if h = strings.TrimSpace(h); h == "" {
			continue
		} else if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	key, der, err := issue(server, ca, caKey)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	files["servercert.pem"], files["serverkey.pem"] = pemCert(der), pemKey(key)

	key, der, err = issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: o.ClientCN, Organization: []string{o.Org}},
		NotBefore:   nb,
		NotAfter:    na,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	files["clientcert.pem"], files["clientkey.pem"] = pemCert(der), pemKey(key)

	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	if !o.Force {
		for name := range files {
			if _, err := os.Stat(filepath.Join(o.Dir, name)); err == nil {
				return fmt.Errorf("%s exists (use -force to replace the PKI)", filepath.Join(o.Dir, name))
			}
		}
	}
	for name, data := range files {
		perm := os.FileMode(0o644)
		if strings.HasSuffix(name, "key.pem") {
			perm = 0o600
		}
		path := filepath.Join(o.Dir, name)
		if err := os.WriteFile(path, data, perm); err != nil {
			return err
		}
		if err := os.Chmod(path, perm); err != nil { // WriteFile keeps an old file's mode
			return err
		}
	}
	return nil
}

// issue makes a key and a certificate for tmpl signed by parent (self-signed
// when parent is nil).
func issue(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	return key, der, err
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(k) // cannot fail for a P-256 key
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
