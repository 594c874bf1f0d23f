package transport_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/virtrpc/virtrpc/internal/sshd"
	"github.com/virtrpc/virtrpc/transport"
)

// TestSSHDialCancelledMidHandshake: a server that accepts and then says
// nothing (or only its banner) holds DialSSH until ctx ends; DialSSH then
// returns the context's error, and goleak (TestMain) sees no goroutine
// left behind.
func TestSSHDialCancelledMidHandshake(t *testing.T) {
	key := sshd.NewKey(t)
	for _, banner := range []string{"", "SSH-2.0-OpenSSH_9.9\r\n"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		accepted := make(chan net.Conn, 1)
		go func() {
			nc, err := ln.Accept()
			if err == nil {
				_, _ = nc.Write([]byte(banner))
				accepted <- nc
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		_, err = transport.DialSSH(ctx, ln.Addr().String(), "unix", "/nowhere", &transport.SSHOptions{
			User: "u", HostKeyCallback: ssh.FixedHostKey(key.PublicKey()), Signers: []ssh.Signer{key}})
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "banner %q", banner)
		assert.Less(t, time.Since(start), 5*time.Second)
		(<-accepted).Close()
		ln.Close()
	}
}

// TestSSHKnownHostsForms: known_hosts entries hashed (HashKnownHosts) and
// in the [host]:port form of a non-22 port are found; a changed key's
// error names the port, the fingerprint and the file:line of the key known.
func TestSSHKnownHostsForms(t *testing.T) {
	s := sshd.Start(t)
	sock := unixServer(t)
	ctx := testCtx(t)
	require.False(t, strings.HasSuffix(s.Addr, ":22"))
	write := func(lines ...string) string {
		p := filepath.Join(t.TempDir(), "known_hosts")
		require.NoError(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
		return p
	}
	hashed := knownhosts.Line([]string{knownhosts.HashHostname(knownhosts.Normalize(s.Addr))}, s.HostKey)
	other := sshd.NewKey(t).PublicKey()
	opts := func(kh string) *transport.SSHOptions {
		return &transport.SSHOptions{User: s.User, KnownHosts: []string{kh}, Signers: []ssh.Signer{s.Client}}
	}
	t.Run("hashed", func(t *testing.T) {
		nc, err := transport.DialSSH(ctx, s.Addr, "unix", sock, opts(write("# comment", hashed)))
		require.NoError(t, err)
		nc.Close()
	})
	t.Run("host without the port is another host", func(t *testing.T) {
		host, _, _ := net.SplitHostPort(s.Addr)
		_, err := transport.DialSSH(ctx, s.Addr, "unix", sock, opts(write(knownhosts.Line([]string{host}, s.HostKey))))
		require.ErrorIs(t, err, transport.ErrHostKeyUnknown)
		assert.ErrorContains(t, err, knownhosts.Normalize(s.Addr))
	})
	t.Run("changed, hashed", func(t *testing.T) {
		kh := write("# comment", knownhosts.Line([]string{knownhosts.HashHostname(knownhosts.Normalize(s.Addr))}, other))
		_, err := transport.DialSSH(ctx, s.Addr, "unix", sock, opts(kh))
		require.ErrorIs(t, err, transport.ErrHostKeyChanged)
		var he *transport.HostKeyError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, []string{kh + ":2"}, he.Known)
		assert.Equal(t, ssh.FingerprintSHA256(s.HostKey), he.Fingerprint)
		assert.ErrorContains(t, err, knownhosts.Normalize(s.Addr))
	})
}

// TestSSHAgentAbsent: asking for the agent where there is none fails up
// front, saying so.
func TestSSHAgentAbsent(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	key := sshd.NewKey(t)
	o := &transport.SSHOptions{User: "u", HostKeyCallback: ssh.FixedHostKey(key.PublicKey()), Agent: true}
	_, err := transport.DialSSH(testCtx(t), "127.0.0.1:1", "unix", "/x", o)
	require.ErrorContains(t, err, "ssh agent: no socket")
	o.AgentSocket = filepath.Join(t.TempDir(), "missing.sock")
	_, err = transport.DialSSH(testCtx(t), "127.0.0.1:1", "unix", "/x", o)
	require.ErrorContains(t, err, "ssh agent")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestSSHAddressDefaultsToPort22: "host", "::1" and "[::1]" all mean port
// 22 of that host (no "[[::1]]:22").
func TestSSHAddressDefaultsToPort22(t *testing.T) {
	key := sshd.NewKey(t)
	o := &transport.SSHOptions{User: "u", HostKeyCallback: ssh.FixedHostKey(key.PublicKey()), Signers: []ssh.Signer{key}}
	for addr, want := range map[string]string{"127.0.0.1": "127.0.0.1:22", "::1": "[::1]:22", "[::1]": "[::1]:22"} {
		ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
		_, err := transport.DialSSH(ctx, addr, "unix", "/x", o)
		cancel()
		require.Error(t, err, addr) // nothing listens on port 22 here
		assert.Contains(t, err.Error(), want, addr)
		assert.NotContains(t, err.Error(), "[[", addr)
	}
}

// TestSSHMissingKnownHostsIsAnUnknownHost: a first-time user has no
// ~/.ssh/known_hosts; as with OpenSSH, a missing file knows no host, so the
// refusal is ErrHostKeyUnknown with the fingerprint to check, not "no such
// file".
func TestSSHMissingKnownHostsIsAnUnknownHost(t *testing.T) {
	s := sshd.Start(t)
	sock := unixServer(t)
	_, err := transport.DialSSH(testCtx(t), s.Addr, "unix", sock, &transport.SSHOptions{User: s.User,
		KnownHosts: []string{filepath.Join(t.TempDir(), "known_hosts")}, Signers: []ssh.Signer{s.Client}})
	require.ErrorIs(t, err, transport.ErrHostKeyUnknown)
	assert.ErrorContains(t, err, ssh.FingerprintSHA256(s.HostKey))
}

// TestSSHRevokedHostKey: a key marked @revoked in known_hosts is refused
// as such (ErrHostKeyRevoked, a *HostKeyError naming file:line), even when
// another line lists it as the host's key.
func TestSSHRevokedHostKey(t *testing.T) {
	s := sshd.Start(t)
	sock := unixServer(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	lines := "@revoked * " + string(ssh.MarshalAuthorizedKey(s.HostKey)) + knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey) + "\n"
	require.NoError(t, os.WriteFile(kh, []byte(lines), 0o600))
	_, err := transport.DialSSH(testCtx(t), s.Addr, "unix", sock, &transport.SSHOptions{User: s.User, KnownHosts: []string{kh}, Signers: []ssh.Signer{s.Client}})
	require.ErrorIs(t, err, transport.ErrHostKeyRevoked)
	var he *transport.HostKeyError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, []string{kh + ":1"}, he.Known)
	assert.ErrorContains(t, err, ssh.FingerprintSHA256(s.HostKey))
}
