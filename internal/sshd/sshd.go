// Package sshd starts a real, throwaway OpenSSH sshd for the SSH
// transport's tests: on 127.0.0.1 at a free port, in a directory of its
// own (host key, authorized_keys, config, log), public-key logins only,
// TCP and stream-local forwarding allowed, stopped by its PID when the test
// ends. Keys are made in Go, so ssh-keygen is not needed.
package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Binary is where Debian's openssh-server installs sshd.
const Binary = "/usr/sbin/sshd"

// Require skips the test when sshd is missing or the test does not run as
// root (sshd's privilege separation needs it), or fails it under
// VIRTRPC_REQUIRE_PEERS=1.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if _, err := os.Stat(Binary); err != nil {
		missing = append(missing, Binary+" (package openssh-server)")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (sshd's privilege separation)")
	}
	if len(missing) > 0 {
		msg := "real sshd not available: missing " + strings.Join(missing, ", ")
		if os.Getenv("VIRTRPC_REQUIRE_PEERS") == "1" {
			t.Fatal(msg + " (VIRTRPC_REQUIRE_PEERS=1)")
		}
		t.Skip(msg)
	}
}

// Server is one running sshd.
type Server struct {
	Dir     string        // its directory
	Addr    string        // 127.0.0.1:PORT
	User    string        // the user the client logs in as (the test's own)
	HostKey ssh.PublicKey // the key the server presents
	Client  ssh.Signer    // a key in its authorized_keys
	// ClientKey is Client's private key (to load into an ssh-agent).
	ClientKey ed25519.PrivateKey
	PID       int

	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// Start starts an sshd for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "virtrpc-sshd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir, User: u.Username, exited: make(chan struct{})}
	hostKey, hostPriv := newKey(t)
	s.HostKey = hostKey.PublicKey()
	writePrivate(t, filepath.Join(dir, "hostkey"), hostPriv)
	s.Client, s.ClientKey = newKey(t)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(s.Client.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		t.Fatal(err)
	}
	port := freePort(t)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %[2]s/hostkey
PidFile %[2]s/sshd.pid
AuthorizedKeysFile %[2]s/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
MaxStartups 100
`, port, dir)
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -D: stay in the foreground, so the PID we hold is the daemon's.
	s.cmd = exec.Command(Binary, "-D", "-f", confPath, "-E", filepath.Join(dir, "sshd.log"))
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	s.PID = s.cmd.Process.Pid
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	if err := s.waitReady(10 * time.Second); err != nil {
		t.Fatalf("sshd did not come up: %v\nlog:\n%s", err, s.Log())
	}
	return s
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("sshd exited: %v", s.err)
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops sshd by its PID (SIGTERM, SIGKILL after 5 s).
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(s.PID, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(s.PID, syscall.SIGKILL)
		<-s.exited
	}
}

// Log returns sshd's log.
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// KnownHosts writes a known_hosts file that lists key (the server's own
// HostKey, or another for a "changed key" test) for the server's address,
// and returns its path. A nil key writes an empty file.
func (s *Server) KnownHosts(t testing.TB, key ssh.PublicKey) string {
	t.Helper()
	var line string
	if key != nil {
		line = knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, key) + "\n"
	}
	f, err := os.CreateTemp(s.Dir, "known_hosts-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// NewKey returns a fresh ed25519 signer (a key sshd does not know).
func NewKey(t testing.TB) ssh.Signer {
	s, _ := newKey(t)
	return s
}

func newKey(t testing.TB) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func writePrivate(t testing.TB, path string, priv ed25519.PrivateKey) {
	t.Helper()
	b, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
