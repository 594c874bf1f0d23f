package sasl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

// TestPasswordChangeSeenAtTheSameMtimeAndSize: AddUserToFile changing a
// password writes a file of the same size; on a file system with coarse
// timestamps it can carry the same mtime too. The store must still see
// the new verifier (the file was replaced: another inode), or the old
// password keeps working.
func TestPasswordChangeSeenAtTheSameMtimeAndSize(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users")
	require.NoError(t, sasl.AddUserToFile(file, user, password, 0))
	store, err := sasl.OpenFileStore(file)
	require.NoError(t, err)
	before, err := os.Stat(file)
	require.NoError(t, err)
	old, err := store.Lookup(user)
	require.NoError(t, err)

	require.NoError(t, sasl.AddUserToFile(file, user, "changed!!", 0))
	require.NoError(t, os.Chtimes(file, before.ModTime(), before.ModTime()))
	after, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, before.Size(), after.Size())
	require.Equal(t, before.ModTime(), after.ModTime())

	v, err := store.Lookup(user)
	require.NoError(t, err)
	assert.NotEqual(t, old.StoredKey, v.StoredKey, "the old password's verifier is still in force")
}

// TestFileStoreBadLines: a bad line fails the whole file, naming the line;
// a verifier under 4096 iterations is one.
func TestFileStoreBadLines(t *testing.T) {
	v, err := sasl.NewVerifier(password, 0)
	require.NoError(t, err)
	low := "SCRAM-SHA-256$1000" + v.String()[len("SCRAM-SHA-256$4096"):]
	for _, tc := range []struct{ name, content, want string }{
		{"no colon", "# users\nfred\n", ":2: want user:verifier"},
		{"empty user", ":" + v.String() + "\n", ":1: want user:verifier"},
		{"low iterations", "fred:" + low + "\n", ":1: sasl: verifier"},
		{"garbage verifier", "\n\nfred:SCRAM-SHA-256$x\n", ":3:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "users")
			require.NoError(t, os.WriteFile(file, []byte(tc.content), 0o600))
			_, err := sasl.OpenFileStore(file)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestStoredVerifiersAreUsableByOurClient: a verifier the store accepts
// must be one our own client computes (at most MaxIterations), or the
// user can never log in with this package.
func TestStoredVerifiersAreUsableByOurClient(t *testing.T) {
	_, err := sasl.NewVerifier(password, sasl.MaxIterations+1)
	require.ErrorContains(t, err, "at most")
	file := filepath.Join(t.TempDir(), "users")
	require.Error(t, sasl.AddUserToFile(file, user, password, sasl.MaxIterations+1))
	// A hand-written line asking more (16M would cost every PLAIN attempt,
	// an unknown client's included, seconds of the server's CPU) is refused.
	v, err := sasl.NewVerifier(password, 0)
	require.NoError(t, err)
	_, err = sasl.ParseVerifier(strings.Replace(v.String(), "$4096:", "$16777216:", 1))
	require.ErrorContains(t, err, "MaxIterations")
}

// TestAddUserToFileRefusesACommentName: a user name starting with '#'
// would be written as a comment line and silently never exist.
func TestAddUserToFileRefusesACommentName(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users")
	err := sasl.AddUserToFile(file, "#admin", password, 0)
	require.Error(t, err)
	assert.ErrorContains(t, err, "'#'")
}
