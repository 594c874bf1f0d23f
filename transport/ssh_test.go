package transport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/virtrpc/virtrpc/internal/sshd"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
	"github.com/virtrpc/virtrpc/transport"
)

var (
	echoProc   = rpc.Procedure{Prog: 0x51, Vers: 1, Proc: 1}
	uploadProc = rpc.Procedure{Prog: 0x51, Vers: 1, Proc: 2} // args: the sha256 of the data
)

// streamServer serves echoProc and uploadProc (which checks the data's
// sha256 and fails the stream's Close if it differs) on ln.
func streamServer(t *testing.T, ln net.Listener) {
	mux := rpc.NewMux()
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return req.Payload, nil })
	mux.Handle(uploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		want := bytes.Clone(req.Payload)
		go func() {
			h := sha256.New()
			if _, err := io.Copy(h, st); err != nil {
				return
			}
			if got := h.Sum(nil); !bytes.Equal(got, want) {
				_ = st.CloseWithError(fmt.Errorf("sha256 %x, want %x", got, want))
				return
			}
			_ = st.Close()
		}()
		return nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rpc.Serve(ctx, ln, &rpc.Options{Handlers: mux}, nil) }()
	t.Cleanup(func() { cancel(); <-done })
}

func unixServer(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ssh-target-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "virtrpc.sock")
	ln, err := transport.ListenUnix(testCtx(t), sock)
	require.NoError(t, err)
	streamServer(t, ln)
	return sock
}

// uploadOver sends size pseudo-random bytes over c's upload stream and
// returns the throughput in MB/s; the server checks the sha256.
func uploadOver(t *testing.T, c *rpc.Conn, size int64) float64 {
	src := func() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{7}), size) }
	h := sha256.New()
	_, err := io.Copy(h, src())
	require.NoError(t, err)
	ctx := testCtx(t)
	start := time.Now()
	st, _, err := c.OpenStream(ctx, uploadProc, h.Sum(nil), stream.Upload, nil)
	require.NoError(t, err)
	n, err := io.Copy(st, src())
	require.NoError(t, err)
	require.Equal(t, size, n)
	require.NoError(t, st.Close(), "the server's verdict on the sha256")
	return float64(size) / 1e6 / time.Since(start).Seconds()
}

func streamSize() int64 {
	if raceEnabled {
		return 32 << 20
	}
	return 256 << 20
}

// TestSSHReachesAUnixSocket: through a real sshd (direct-streamlocal), a
// call and a 256 MiB stream (sha256 checked) reach a virtrpc server on a
// unix socket behind it. Over TLS on loopback for comparison.
func TestSSHReachesAUnixSocket(t *testing.T) {
	s := sshd.Start(t)
	sock := unixServer(t)
	ctx := testCtx(t)
	opts := &transport.SSHOptions{User: s.User, KnownHosts: []string{s.KnownHosts(t, s.HostKey)}, Signers: []ssh.Signer{s.Client}}
	nc, err := transport.DialSSH(ctx, s.Addr, "unix", sock, opts)
	require.NoError(t, err)
	c, err := rpc.Client(ctx, nc, nil)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, rpc.ModeNative, c.Mode())
	got, err := c.Call(ctx, echoProc, []byte("through sshd"))
	require.NoError(t, err)
	assert.Equal(t, "through sshd", string(got))
	mbps := uploadOver(t, c, streamSize())
	t.Logf("ssh: %d MiB at %.0f MB/s", streamSize()>>20, mbps)

	if !raceEnabled {
		p := newPKI(t)
		ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig()})
		require.NoError(t, err)
		streamServer(t, ln)
		tc, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: p.ClientConfig()})
		require.NoError(t, err)
		c2, err := rpc.Client(ctx, tc, nil)
		require.NoError(t, err)
		defer c2.Close()
		tlsMBps := uploadOver(t, c2, streamSize())
		t.Logf("tls: %d MiB at %.0f MB/s; ssh/tls = %.2f", streamSize()>>20, tlsMBps, mbps/tlsMBps)
	}
}

func TestSSHReachesATCPPort(t *testing.T) {
	s := sshd.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	streamServer(t, ln)
	ctx := testCtx(t)
	opts := &transport.SSHOptions{User: s.User, KnownHosts: []string{s.KnownHosts(t, s.HostKey)}, Signers: []ssh.Signer{s.Client}}
	nc, err := transport.DialSSH(ctx, s.Addr, "tcp", ln.Addr().String(), opts)
	require.NoError(t, err)
	c, err := rpc.Client(ctx, nc, nil)
	require.NoError(t, err)
	defer c.Close()
	got, err := c.Call(ctx, echoProc, []byte("direct-tcpip"))
	require.NoError(t, err)
	assert.Equal(t, "direct-tcpip", string(got))
}

func TestSSHRefusals(t *testing.T) {
	s := sshd.Start(t)
	sock := unixServer(t)
	ctx := testCtx(t)
	dial := func(o *transport.SSHOptions) error {
		nc, err := transport.DialSSH(ctx, s.Addr, "unix", sock, o)
		if err == nil {
			nc.Close()
		}
		return err
	}
	t.Run("unknown host key", func(t *testing.T) {
		err := dial(&transport.SSHOptions{User: s.User, KnownHosts: []string{s.KnownHosts(t, nil)}, Signers: []ssh.Signer{s.Client}})
		require.ErrorIs(t, err, transport.ErrHostKeyUnknown)
		var he *transport.HostKeyError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, ssh.FingerprintSHA256(s.HostKey), he.Fingerprint)
		assert.Contains(t, err.Error(), "not in known_hosts")
	})
	t.Run("changed host key", func(t *testing.T) {
		err := dial(&transport.SSHOptions{User: s.User, KnownHosts: []string{s.KnownHosts(t, sshd.NewKey(t).PublicKey())}, Signers: []ssh.Signer{s.Client}})
		require.ErrorIs(t, err, transport.ErrHostKeyChanged)
		assert.Contains(t, err.Error(), "possible man-in-the-middle")
	})
	t.Run("wrong client key", func(t *testing.T) {
		err := dial(&transport.SSHOptions{User: s.User, KnownHosts: []string{s.KnownHosts(t, s.HostKey)}, Signers: []ssh.Signer{sshd.NewKey(t)}})
		require.ErrorIs(t, err, transport.ErrSSHAuth)
		assert.NotErrorIs(t, err, transport.ErrHostKeyUnknown)
	})
	t.Run("no socket behind sshd", func(t *testing.T) {
		nc, err := transport.DialSSH(ctx, s.Addr, "unix", sock+".missing", &transport.SSHOptions{User: s.User, KnownHosts: []string{s.KnownHosts(t, s.HostKey)}, Signers: []ssh.Signer{s.Client}})
		if err == nil {
			nc.Close()
		}
		require.ErrorContains(t, err, "opening unix "+sock+".missing on the remote host")
	})
}

// TestSSHWithAnAgent: the client key lives in a real ssh-agent only.
func TestSSHWithAnAgent(t *testing.T) {
	agentBin, err := exec.LookPath("ssh-agent")
	if err != nil {
		if os.Getenv("VIRTRPC_REQUIRE_PEERS") == "1" {
			t.Fatal("ssh-agent (package openssh-client) missing")
		}
		t.Skip("ssh-agent (package openssh-client) missing")
	}
	s := sshd.Start(t)
	sock := filepath.Join(s.Dir, "agent.sock")
	cmd := exec.Command(agentBin, "-D", "-a", sock)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	var ac net.Conn
	require.Eventually(t, func() bool { ac, err = net.Dial("unix", sock); return err == nil }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, agent.NewClient(ac).Add(agent.AddedKey{PrivateKey: s.ClientKey}))
	ac.Close()

	target := unixServer(t)
	ctx := testCtx(t)
	nc, err := transport.DialSSH(ctx, s.Addr, "unix", target, &transport.SSHOptions{
		User: s.User, KnownHosts: []string{s.KnownHosts(t, s.HostKey)}, Agent: true, AgentSocket: sock})
	require.NoError(t, err)
	c, err := rpc.Client(ctx, nc, nil)
	require.NoError(t, err)
	defer c.Close()
	got, err := c.Call(ctx, echoProc, []byte("agent"))
	require.NoError(t, err)
	assert.Equal(t, "agent", string(got))
}

// TestSSHKeyFiles: an unencrypted key file, and an encrypted one with
// KeyPassphrase (without it: a clear error).
func TestSSHKeyFiles(t *testing.T) {
	s := sshd.Start(t)
	sock := unixServer(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	plain, err := ssh.MarshalPrivateKey(s.ClientKey, "")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "id"), pem.EncodeToMemory(plain), 0o600))
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(s.ClientKey, "", []byte("open sesame"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "id_enc"), pem.EncodeToMemory(enc), 0o600))
	kh := s.KnownHosts(t, s.HostKey)
	for _, tc := range []struct {
		name string
		file string
		pass func(string) ([]byte, error)
		err  string
	}{
		{"plain", "id", nil, ""},
		{"encrypted", "id_enc", func(string) ([]byte, error) { return []byte("open sesame"), nil }, ""},
		{"encrypted without passphrase", "id_enc", nil, "passphrase"},
		{"wrong passphrase", "id_enc", func(string) ([]byte, error) { return []byte("nope"), nil }, "id_enc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := transport.DialSSH(ctx, s.Addr, "unix", sock, &transport.SSHOptions{User: s.User, KnownHosts: []string{kh},
				KeyFiles: []string{filepath.Join(dir, tc.file)}, KeyPassphrase: tc.pass})
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			nc.Close()
		})
	}
}
