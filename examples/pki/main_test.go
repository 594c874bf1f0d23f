package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/libvirtd"
	"github.com/virtrpc/virtrpc/transport"
)

func makePKI(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "pki")
	require.NoError(t, Make(Options{Dir: dir, Hosts: []string{"localhost", "127.0.0.1", "::1"}, ClientCN: "alice", Org: "virtrpc", Validity: 24 * time.Hour}))
	return dir
}

func TestMakeWritesLibvirtLayout(t *testing.T) {
	dir := makePKI(t)
	for name, perm := range map[string]os.FileMode{"cacert.pem": 0o644, "cakey.pem": 0o600, "servercert.pem": 0o644,
		"serverkey.pem": 0o600, "clientcert.pem": 0o644, "clientkey.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, perm, fi.Mode().Perm(), name)
	}
	err := Make(Options{Dir: dir, Hosts: []string{"localhost"}, Validity: time.Hour})
	require.ErrorContains(t, err, "exists", "never overwrites without Force")
	_, err = transport.LoadLibvirtServerConfig(dir)
	require.NoError(t, err)
	_, err = transport.LoadLibvirtClientConfig(dir, "localhost")
	require.NoError(t, err)
}

// TestRealLibvirtdAcceptsThePKI: libvirtd (GnuTLS) serves TLS with the
// server certificate, accepts the client certificate (it sends its
// acknowledgement byte) and answers calls.
func TestRealLibvirtdAcceptsThePKI(t *testing.T) {
	_, virsh := libvirtd.Require(t)
	dir := makePKI(t)
	d := libvirtd.Start(t, &libvirtd.Options{TLSDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := transport.LoadLibvirtClientConfig(dir, "127.0.0.1")
	require.NoError(t, err)
	nc, err := transport.DialTLS(ctx, "tcp", d.TLSAddr, &transport.TLSOptions{Config: cfg, LibvirtAck: true})
	require.NoError(t, err, "libvirtd refused the PKI; its log:\n%s", d.LogText())
	c, err := libvirtd.Client(ctx, nc, "test:///default", nil)
	require.NoError(t, err)
	defer c.Close()
	var host libvirtd.HostnameRet
	require.NoError(t, c.CallXDR(ctx, libvirtd.Proc(libvirtd.ProcConnectGetHostname), nil, &host))
	assert.NotEmpty(t, host.Hostname)

	// libvirt's own client (GnuTLS checking the server certificate) too.
	out, err := exec.CommandContext(ctx, virsh, "-q", "-c", "test+tls://"+d.TLSAddr+"/default?pkipath="+dir, "hostname").CombinedOutput()
	require.NoError(t, err, "virsh: %s", out)
	assert.Equal(t, host.Hostname, strings.TrimSpace(string(out)))
}
