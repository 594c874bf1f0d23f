package sasl_test

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// capturedAuth returns the payloads of the auth procedures in capture 08
// (virsh logging into libvirtd with SCRAM-SHA-256), by procedure and
// direction ("c" calls, "s" replies).
func capturedAuth(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for dir, file := range map[string]string{"c": "client-to-server.bin", "s": "server-to-client.bin"} {
		b, err := os.ReadFile("../../testdata/libvirt-wire/08-sasl-scram-unix/" + file)
		require.NoError(t, err)
		for len(b) >= 28 {
			n := binary.BigEndian.Uint32(b)
			proc := binary.BigEndian.Uint32(b[12:])
			if proc >= 66 && proc <= 69 {
				out[dir+string(rune('0'+proc-60))] = b[28:n]
			}
			b = b[n:]
		}
	}
	return out
}

// TestCapturedExchangeDecodesAndReencodes: libvirt's own bytes decode to
// the SCRAM messages, and encoding those gives libvirt's bytes back (4
// wire bytes per char).
func TestCapturedExchangeDecodesAndReencodes(t *testing.T) {
	p := capturedAuth(t)
	mech, first, err := sasl.DecodeSASLStart(p["c8"])
	require.NoError(t, err)
	assert.Equal(t, sasl.MechSCRAMSHA256, mech)
	assert.True(t, strings.HasPrefix(string(first), "n,,n=fred,r="), "%q", first)
	assert.Len(t, p["c8"], 4+16+4+4+4*len(first))
	again, err := xdr.Marshal(&sasl.SASLStartArgs{Mech: mech, Data: first})
	require.NoError(t, err)
	assert.Empty(t, cmp.Diff(p["c8"], again))

	complete, serverFirst, err := sasl.DecodeSASLReply(p["s8"])
	require.NoError(t, err)
	assert.False(t, complete)
	assert.Contains(t, string(serverFirst), ",i=4096")

	final, err := sasl.DecodeSASLStep(p["c9"])
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(final), "c=biws,r="), "%q", final)

	complete, serverFinal, err := sasl.DecodeSASLReply(p["s9"])
	require.NoError(t, err)
	assert.True(t, complete, "libvirtd completes in the reply that carries the server-final message")
	assert.True(t, strings.HasPrefix(string(serverFinal), "v="))
	again, err = xdr.Marshal(&sasl.SASLReply{Complete: 1, Data: serverFinal})
	require.NoError(t, err)
	assert.Empty(t, cmp.Diff(p["s9"], again))

	var list sasl.AuthListRet
	require.NoError(t, xdr.Unmarshal(p["s6"], &list))
	assert.Equal(t, []int32{sasl.AuthSASL}, list.Types)
	var init sasl.SASLInitRet
	require.NoError(t, xdr.Unmarshal(p["s7"], &init))
	mechs, err := sasl.ParseMechList(init.Mechlist)
	require.NoError(t, err)
	assert.Equal(t, []string{sasl.MechSCRAMSHA256}, mechs)
}

func TestNilIsNotEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		args sasl.SASLStepArgs
		want []byte
		err  bool
	}{
		{"no data", sasl.SASLStepArgs{Nil: 1}, nil, false},
		{"empty data", sasl.SASLStepArgs{Nil: 0}, []byte{}, false},
		{"data", sasl.SASLStepArgs{Data: []byte("x")}, []byte("x"), false},
		{"nil with data", sasl.SASLStepArgs{Nil: 1, Data: []byte("x")}, nil, true},
		{"nil of 2", sasl.SASLStepArgs{Nil: 2}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := xdr.Marshal(&tc.args)
			require.NoError(t, err)
			got, err := sasl.DecodeSASLStep(b)
			if tc.err {
				require.ErrorIs(t, err, sasl.ErrMalformed)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want == nil, got == nil)
			assert.Equal(t, string(tc.want), string(got))
		})
	}
}

func TestOversizeAndMalformedAuthMessages(t *testing.T) {
	big := make([]byte, sasl.MaxData+1)
	b, err := xdr.Marshal(&struct {
		Nil  int32
		Data []byte `xdr:"char"`
	}{Data: big})
	require.NoError(t, err)
	_, err = sasl.DecodeSASLStep(b)
	require.ErrorIs(t, err, sasl.ErrMalformed)

	b, err = xdr.Marshal(&sasl.SASLStartArgs{Mech: "scram sha", Nil: 1})
	require.NoError(t, err)
	_, _, err = sasl.DecodeSASLStart(b)
	require.ErrorIs(t, err, sasl.ErrMalformed)
	assert.ErrorContains(t, err, "mechanism name")

	_, err = sasl.DecodeSASLStep([]byte{0, 0, 0})
	require.ErrorIs(t, err, sasl.ErrMalformed)
}
