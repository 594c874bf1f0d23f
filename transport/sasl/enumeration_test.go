package sasl_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

// serverFirst runs SCRAM's first step for name against store and returns
// the server-first message's salt and iteration fields.
func serverFirst(t *testing.T, store sasl.CredentialStore, name string) (string, error) {
	sess, err := sasl.SCRAMServer(store).Start(sasl.ConnState{Local: true})
	require.NoError(t, err)
	out, _, err := sess.Step([]byte("n,,n=" + name + ",r=clientnonce"))
	if err != nil {
		return "", err
	}
	f := strings.Split(string(out), ",")
	require.Len(t, f, 3)
	return f[1] + "," + f[2], nil
}

// TestSCRAMUnknownUserFailsWhereAWrongPasswordDoes: an unknown user gets a
// server-first message like a known one (a salt of the same size, stable
// across attempts, the default iterations) and fails only at the proof,
// so with ConcealReasons the exchange does not tell which names exist.
func TestSCRAMUnknownUserFailsWhereAWrongPasswordDoes(t *testing.T) {
	store := fuzzStore()
	known, err := serverFirst(t, store, user)
	require.NoError(t, err)
	unknown, err := serverFirst(t, store, "bob")
	require.NoError(t, err, "refused at the first step: user names can be enumerated")
	again, err := serverFirst(t, store, "bob")
	require.NoError(t, err)
	assert.Equal(t, unknown, again, "the same salt each time")
	assert.Len(t, unknown, len(known))
	assert.True(t, strings.HasSuffix(unknown, ",i=4096"), unknown)

	// The whole exchange: unknown user is still the reason, at the end.
	for _, tc := range []struct {
		creds sasl.Credentials
		want  error
	}{{sasl.Credentials{Username: "bob", Password: password}, sasl.ErrUnknownUser}, {sasl.Credentials{Username: user, Password: "nope"}, sasl.ErrWrongPassword}} {
		cli, err := sasl.SCRAMSHA256(tc.creds).Start(sasl.ConnState{Local: true})
		require.NoError(t, err)
		srv, err := sasl.SCRAMServer(store).Start(sasl.ConnState{Local: true})
		require.NoError(t, err)
		c1, err := cli.Step(nil)
		require.NoError(t, err)
		s1, _, err := srv.Step(c1)
		require.NoError(t, err)
		c2, err := cli.Step(s1)
		require.NoError(t, err)
		_, done, err := srv.Step(c2)
		assert.False(t, done)
		require.ErrorIs(t, err, tc.want)
	}
}

// TestPlainUnknownUserCostsAPasswordCheck: PLAIN for an unknown user takes
// about as long as a wrong password (a PBKDF2), not microseconds.
func TestPlainUnknownUserCostsAPasswordCheck(t *testing.T) {
	store := &sasl.MemoryStore{}
	require.NoError(t, store.AddUser(user, password))
	timeOf := func(msg string) time.Duration {
		var ds []time.Duration
		for range 7 {
			sess, err := sasl.PlainServer(store).Start(sasl.ConnState{Local: true})
			require.NoError(t, err)
			t0 := time.Now()
			_, _, err = sess.Step([]byte(msg))
			ds = append(ds, time.Since(t0))
			require.Error(t, err)
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	wrong := timeOf("\x00" + user + "\x00nope")
	unknown := timeOf("\x00bob\x00nope")
	t.Logf("median: wrong password %v, unknown user %v", wrong, unknown)
	assert.Greater(t, unknown, wrong/3, "an unknown user answers faster than a wrong password")
}
