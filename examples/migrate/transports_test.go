package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/virtrpc/virtrpc/internal/sshd"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// -transport in one process: the migration and its baseline both run over
// the chosen transport.
func TestRunTransports(t *testing.T) {
	for _, tc := range []struct {
		transport string
		want      []string
	}{
		{"tcp", []string{"over TCP, SASL migrate (SCRAM-SHA-256)", "plain TCP       33554432 bytes",
			" MB/s through virtrpc over TCP, plain TCP ", " MB/s in the same run, ratio "}},
		{"unix", []string{"over unix socket, SASL EXTERNAL", "plain unix socket 33554432 bytes",
			" MB/s through virtrpc over unix socket, plain unix socket "}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			var stdout bytes.Buffer
			cfg := config{size: testSize, seed: 2, baseline: true, quiet: true, transport: tc.transport, insecure: true}
			require.NoError(t, run(context.Background(), cfg, &stdout, io.Discard), "stdout:\n%s", &stdout)
			for _, want := range append(tc.want, "destination verified sha256", "\nverified: 33554432 bytes, ") {
				assert.Contains(t, stdout.String(), want)
			}
			t.Log("\n" + stdout.String())
		})
	}
}

// twoHosts runs the destination (dcfg) and the source (scfg) on two
// goroutines; the source connects to the destination's address unless
// scfg.connect is set.
func twoHosts(t *testing.T, dcfg, scfg config) (dout, sout string, derr, serr error) {
	t.Helper()
	addr := make(chan string, 1)
	dcfg.ready = func(a string) { addr <- a }
	var db, sb bytes.Buffer
	dctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	dstErr := make(chan error, 1)
	go func() { dstErr <- run(dctx, dcfg, &db, io.Discard) }()
	select {
	case a := <-addr:
		if scfg.connect == "" {
			scfg.connect = a
		}
	case err := <-dstErr:
		return db.String(), "", err, nil
	}
	serr = run(context.Background(), scfg, &sb, io.Discard)
	if serr != nil { // no migration came: the destination would wait on
		cancel(errors.New("the source failed"))
	}
	derr = <-dstErr
	return db.String(), sb.String(), derr, serr
}

// -transport tcp with SASL SCRAM-SHA-256 (users in a -sasl-db file, the
// password from a file or the environment), and unix with EXTERNAL or
// SCRAM, across two hosts; a wrong password is refused on one clear line.
func TestRunTwoHostsTransports(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "users.scram")
	require.NoError(t, sasl.AddUserToFile(db, "fred", "secret123", sasl.MinIterations))
	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte("secret123\n"), 0o600))
	wrong := filepath.Join(dir, "wrong")
	require.NoError(t, os.WriteFile(wrong, []byte("guess"), 0o600))
	sock := func(name string) string { return filepath.Join(dir, name) }
	for _, tc := range []struct {
		name       string
		dst, src   config
		env        string // the password in $VIRTRPC_SASL_PASSWORD
		want, fail string
	}{
		{name: "tcp scram file",
			dst:  config{transport: "tcp", insecure: true, listen: "127.0.0.1:0", saslDB: db},
			src:  config{transport: "tcp", insecure: true, saslUser: "fred", saslPasswordFile: pw},
			want: "over TCP, SASL fred (SCRAM-SHA-256)"},
		{name: "tcp scram env",
			dst: config{transport: "tcp", insecure: true, listen: "127.0.0.1:0", saslDB: db},
			src: config{transport: "tcp", insecure: true, saslUser: "fred"}, env: "secret123",
			want: "over TCP, SASL fred (SCRAM-SHA-256)"},
		{name: "tcp wrong password",
			dst:  config{transport: "tcp", insecure: true, listen: "127.0.0.1:0", saslDB: db},
			src:  config{transport: "tcp", insecure: true, saslUser: "fred", saslPasswordFile: wrong},
			fail: "authenticating to the destination: "},
		{name: "unix external",
			dst:  config{transport: "unix", listen: sock("ext.sock")},
			src:  config{transport: "unix"},
			want: "over unix socket, SASL EXTERNAL"},
		{name: "unix scram",
			dst:  config{transport: "unix", listen: sock("scram.sock"), saslDB: db},
			src:  config{transport: "unix", saslUser: "fred", saslPasswordFile: pw},
			want: "over unix socket, SASL fred (SCRAM-SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(saslPasswordEnv, tc.env)
			tc.src.size, tc.src.seed, tc.src.quiet = testSize, 6, true
			dout, sout, derr, serr := twoHosts(t, tc.dst, tc.src)
			if tc.fail != "" {
				require.Error(t, serr, "source:\n%s", sout)
				assert.Contains(t, serr.Error(), tc.fail)
				assert.NotContains(t, serr.Error(), "\n", "one line")
				require.Error(t, derr, "the destination, left without a migration")
				return
			}
			require.NoError(t, serr, "source:\n%s", sout)
			require.NoError(t, derr, "destination:\n%s", dout)
			assert.Contains(t, sout, tc.want)
			assert.Contains(t, sout, "\nverified: 33554432 bytes, ")
			assert.Contains(t, dout, "migrated in and running here")
			t.Log("\n" + dout + sout)
		})
	}
}

// -transport ssh: the source reaches the destination's unix socket through
// a real sshd (transport.DialSSH), authenticated by EXTERNAL as the uid
// sshd logged it in as.
func TestRunTwoHostsSSH(t *testing.T) {
	s := sshd.Start(t) // skips without sshd or root, fails under VIRTRPC_REQUIRE_PEERS=1
	dir := t.TempDir()
	key, err := ssh.MarshalPrivateKey(s.ClientKey, "")
	require.NoError(t, err)
	keyFile := filepath.Join(dir, "id")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(key), 0o600))
	sock, err := os.MkdirTemp("", "vmigssh")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(sock) })
	sock = filepath.Join(sock, "migrate.sock")
	dout, sout, derr, serr := twoHosts(t,
		config{transport: "unix", listen: sock},
		config{transport: "ssh", connect: sock, sshAddr: s.Addr, sshUser: s.User, sshKey: keyFile,
			sshKnownHosts: s.KnownHosts(t, s.HostKey), size: testSize, seed: 8, quiet: true})
	require.NoError(t, serr, "source:\n%s", sout)
	require.NoError(t, derr, "destination:\n%s", dout)
	for _, want := range []string{"over SSH, SASL EXTERNAL", "\nverified: 33554432 bytes, ", "through virtrpc over SSH"} {
		assert.Contains(t, sout, want)
	}
	assert.True(t, strings.Contains(dout, "migrated in and running here"), dout)
	t.Log("\n" + dout + sout)
}
