package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

func TestRunAddsAndReplacesUsers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.scram")
	require.NoError(t, run(file, "fred", 4096, strings.NewReader("secret123\n")))
	require.NoError(t, run(file, "wilma", 8192, strings.NewReader("pebbles")))
	require.NoError(t, run(file, "fred", 4096, strings.NewReader("changed")))
	store, err := sasl.OpenFileStore(file)
	require.NoError(t, err)
	v, err := store.Lookup("wilma")
	require.NoError(t, err)
	assert.Equal(t, 8192, v.Iterations)
	_, err = store.Lookup("barney")
	require.ErrorIs(t, err, sasl.ErrUnknownUser)

	// The changed password is the one PLAIN accepts.
	sess, err := sasl.PlainServer(store).Start(sasl.ConnState{Local: true})
	require.NoError(t, err)
	_, _, err = sess.Step([]byte("\x00fred\x00secret123"))
	require.ErrorIs(t, err, sasl.ErrWrongPassword)
	sess, _ = sasl.PlainServer(store).Start(sasl.ConnState{Local: true})
	_, done, err := sess.Step([]byte("\x00fred\x00changed"))
	require.NoError(t, err)
	assert.True(t, done)

	require.Error(t, run(file, "bad:name", 4096, strings.NewReader("x")))
	require.Error(t, run(file, "fred", 1000, strings.NewReader("x")))
	require.Error(t, run(file, "fred", 4096, strings.NewReader("")))
}
