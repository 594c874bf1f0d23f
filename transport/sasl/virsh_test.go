package sasl_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/internal/libvirtd"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// fakeHostname is what the virtrpc server says its host name is.
const fakeHostname = "virtrpc-behind-sasl"

// remoteProcs serves the few remote-program procedures virsh needs to
// connect and run `hostname` (capture 08 lists them): CONNECT_OPEN,
// CONNECT_SUPPORTS_FEATURE (keepalive only), CONNECT_GET_HOSTNAME,
// CONNECT_CLOSE. Each checks that SASL authenticated the connection.
func remoteProcs(mux *rpc.Mux, opened *[]string) {
	who := func(req *rpc.Request) error {
		if sasl.IdentityOf(req.Conn()) == nil {
			return errors.New("handler ran without an identity")
		}
		return nil
	}
	mux.Handle(libvirtd.Proc(libvirtd.ProcConnectOpen), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		var a libvirtd.ConnectOpenArgs
		if err := xdr.Unmarshal(req.Payload, &a); err != nil {
			return nil, err
		}
		if a.Name != nil {
			*opened = append(*opened, *a.Name+" as "+sasl.IdentityOf(req.Conn()).String())
		}
		return nil, who(req)
	})
	mux.Handle(libvirtd.Proc(libvirtd.ProcConnectSupportsFeature), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		var a libvirtd.SupportsFeatureArgs
		if err := xdr.Unmarshal(req.Payload, &a); err != nil {
			return nil, err
		}
		r := libvirtd.SupportsFeatureRet{}
		if a.Feature == libvirtd.FeatureProgramKeepalive {
			r.Supported = 1
		}
		b, err := xdr.Marshal(&r)
		if err != nil {
			return nil, err
		}
		return b, who(req)
	})
	mux.Handle(libvirtd.Proc(libvirtd.ProcConnectGetHostname), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		b, err := xdr.Marshal(&libvirtd.HostnameRet{Hostname: fakeHostname})
		if err != nil {
			return nil, err
		}
		return b, who(req)
	})
	mux.Handle(libvirtd.Proc(libvirtd.ProcConnectClose), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return nil, who(req)
	})
}

// authFile writes a LIBVIRT_AUTH_FILE with user's password.
func authFile(t *testing.T, pass string) string {
	p := filepath.Join(t.TempDir(), "auth.conf")
	conf := fmt.Sprintf("[credentials-x]\nauthname=%s\npassword=%s\n\n[auth-libvirt-default]\ncredentials=x\n\n[auth-libvirt-localhost]\ncredentials=x\n\n[auth-libvirt-127.0.0.1]\ncredentials=x\n", user, pass)
	require.NoError(t, os.WriteFile(p, []byte(conf), 0o600))
	return p
}

// TestVirshAuthenticatesToAVirtrpcServer: libvirt's own client (virsh,
// Cyrus SASL's SCRAM-SHA-256) logs into a virtrpc server over a unix
// socket and over TLS, and prints the host name the server returns; with
// a wrong password virsh fails with libvirt's authentication error.
func TestVirshAuthenticatesToAVirtrpcServer(t *testing.T) {
	_, virsh := libvirtd.Require(t)
	libvirtd.RequireSASL(t)
	pki := newPKI(t)
	pkiDir := t.TempDir()
	require.NoError(t, pki.WriteLibvirtDir(pkiDir))
	srvTLS := pki.ServerConfig()
	for _, tr := range []string{"unix", "tls"} {
		t.Run(tr, func(t *testing.T) {
			var opened []string
			o := fixtureOpts{extra: func(m *rpc.Mux) { remoteProcs(m, &opened) }}
			if tr == "tls" {
				o.network, o.tls, o.libvirtAck = "tcp", srvTLS, true
			}
			f := startServer(t, o)
			uri := "test+unix:///default?socket=" + f.addr
			if tr == "tls" {
				uri = "test+tls://" + f.addr + "/default?pkipath=" + pkiDir
			}
			run := func(pass string) (string, error) {
				ctx := testCtx(t)
				cmd := exec.CommandContext(ctx, virsh, "-q", "-c", uri, "hostname")
				cmd.Env = append(os.Environ(), "LIBVIRT_AUTH_FILE="+authFile(t, pass))
				out, err := cmd.CombinedOutput()
				return strings.TrimSpace(string(out)), err
			}
			out, err := run(password)
			require.NoError(t, err, "virsh: %s", out)
			assert.Equal(t, fakeHostname, out)
			assert.Equal(t, []string{"test:///default as fred (SCRAM-SHA-256)"}, opened)

			out, err = run("wrong")
			require.Error(t, err)
			assert.Contains(t, out, "authentication failed", "virsh says: %s", out)
			assert.Len(t, opened, 1)
		})
	}
}
