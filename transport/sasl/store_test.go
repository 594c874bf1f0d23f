package sasl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

func TestVerifierKeepsNoPassword(t *testing.T) {
	v, err := sasl.NewVerifier(password, 0)
	require.NoError(t, err)
	assert.Equal(t, sasl.MinIterations, v.Iterations)
	assert.NotContains(t, v.String(), password)
	w, err := sasl.ParseVerifier(v.String())
	require.NoError(t, err)
	assert.Equal(t, v, w)
	_, err = sasl.NewVerifier(password, 1000)
	require.Error(t, err, "fewer than 4096 iterations")
	for _, bad := range []string{"", "SCRAM-SHA-1$4096:c2FsdA==$a:b", strings.Replace(v.String(), "$4096:", "$100:", 1), strings.Replace(v.String(), "$4096:", "$4096:!!", 1)} {
		_, err := sasl.ParseVerifier(bad)
		assert.Error(t, err, "%q", bad)
	}
}

// TestFileStoreSeesNewUsers: a user added to the file while a server runs
// can log in on the next attempt.
func TestFileStoreSeesNewUsers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users")
	require.NoError(t, sasl.AddUserToFile(file, user, password, 0))
	store, err := sasl.OpenFileStore(file)
	require.NoError(t, err)
	_, err = store.Lookup("wilma")
	require.ErrorIs(t, err, sasl.ErrUnknownUser)
	time.Sleep(10 * time.Millisecond) // a new mtime
	require.NoError(t, sasl.AddUserToFile(file, "wilma", "pebbles", 0))
	_, err = store.Lookup("wilma")
	require.NoError(t, err)
	fi, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	f := startServer(t, fixtureOpts{sasl: &sasl.ServerOptions{Mechanisms: []sasl.ServerMechanism{sasl.SCRAMServer(store)}}})
	c := f.dial(t, compat)
	id, err := sasl.Authenticate(testCtx(t), c, &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.SCRAMSHA256(sasl.Credentials{Username: "wilma", Password: "pebbles"})}})
	require.NoError(t, err)
	assert.Equal(t, "wilma", id.Username)
}
