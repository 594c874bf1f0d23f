package libvirtd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtrpc/virtrpc/internal/testcert"
)

// SASLOptions make a daemon authenticate its clients with Cyrus SASL
// (auth_unix_rw, and auth_tls when it listens on TLS, are "sasl").
type SASLOptions struct {
	// Mechanisms is Cyrus SASL's mech_list; empty means "scram-sha-256".
	Mechanisms string
	// Users and their passwords, put in the daemon's own sasldb with
	// saslpasswd2 (application "libvirt", the default realm).
	Users map[string]string
}

// ScramPlugin is where Debian's libsasl2-modules installs Cyrus SASL's
// SCRAM plugin.
const ScramPlugin = "/usr/lib/x86_64-linux-gnu/sasl2/libscram.so"

// RequireSASL skips the test when saslpasswd2 or Cyrus SASL's SCRAM plugin
// is missing (or fails it under VIRTRPC_REQUIRE_PEERS=1), on top of what
// Require checks.
func RequireSASL(t testing.TB) {
	t.Helper()
	Require(t)
	var missing []string
	if _, err := lookPath("saslpasswd2", "/usr/sbin/saslpasswd2"); err != nil {
		missing = append(missing, "saslpasswd2 (package sasl2-bin)")
	}
	if _, err := os.Stat(ScramPlugin); err != nil {
		missing = append(missing, ScramPlugin+" (package libsasl2-modules)")
	}
	if len(missing) > 0 {
		msg := "Cyrus SASL not available: missing " + strings.Join(missing, ", ")
		if requirePeers() {
			t.Fatal(msg + " (VIRTRPC_REQUIRE_PEERS=1)")
		}
		t.Skip(msg)
	}
}

// setupSASL writes DIR/sasl/libvirt.conf and the sasldb, and returns the
// environment libvirtd needs to find them.
func setupSASL(t testing.TB, dir string, o *SASLOptions) []string {
	t.Helper()
	RequireSASL(t)
	sdir := filepath.Join(dir, "sasl")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	mechs := o.Mechanisms
	if mechs == "" {
		mechs = "scram-sha-256"
	}
	db := filepath.Join(sdir, "libvirt.db")
	conf := fmt.Sprintf("mech_list: %s\nsasldb_path: %s\n", mechs, db)
	if err := os.WriteFile(filepath.Join(sdir, "libvirt.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	saslpasswd2, _ := lookPath("saslpasswd2", "/usr/sbin/saslpasswd2")
	for user, pass := range o.Users {
		cmd := exec.Command(saslpasswd2, "-p", "-f", db, "-a", "libvirt", "-c", user)
		cmd.Stdin = strings.NewReader(pass)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("saslpasswd2 -c %s: %v: %s", user, err, out)
		}
	}
	return []string{"SASL_CONF_PATH=" + sdir}
}

// tlsConf is the libvirtd.conf part for listening on TLS at 127.0.0.1 and
// a free port, with the certificates of pkiDir (libvirt's layout: see
// testcert.PKI.WriteLibvirtDir).
func tlsConf(t testing.TB, pkiDir, auth string) (conf, addr string) {
	t.Helper()
	port := freePort(t)
	conf = fmt.Sprintf(`listen_tls = 1
listen_addr = "127.0.0.1"
tls_port = "%d"
auth_tls = %q
key_file = %q
cert_file = %q
ca_file = %q
`, port, auth,
		filepath.Join(pkiDir, testcert.ServerKeyFile),
		filepath.Join(pkiDir, testcert.ServerCertFile),
		filepath.Join(pkiDir, testcert.CACertFile))
	return conf, fmt.Sprintf("127.0.0.1:%d", port)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitTLS waits until the TLS port (if any) accepts connections: libvirtd
// may open its unix socket first.
func (d *Daemon) waitTLS(timeout time.Duration) error {
	if d.TLSAddr == "" {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("libvirtd exited: %v", d.waitErr)
		default:
		}
		c, err := net.DialTimeout("tcp", d.TLSAddr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s after %v: %w", d.TLSAddr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
