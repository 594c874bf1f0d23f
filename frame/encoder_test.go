package frame_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// The encoder lays messages out as Append does, with one size check at
// the exact limit, and one allocation per message.
func TestEncoderMessages(t *testing.T) {
	enc := frame.Encoder{Max: 100}
	h := frame.Header{Prog: 1, Vers: 2, Proc: 3, Type: frame.TypeCall, Serial: 9}
	payload := bytes.Repeat([]byte{7}, 100-frame.HeaderSize)
	msg, err := enc.Message(h, payload)
	require.NoError(t, err)
	assert.Equal(t, frame.Append(nil, h, payload), msg)
	assert.Equal(t, len(msg), cap(msg), "sized exactly")
	_, err = enc.Message(h, append(payload, 0))
	require.ErrorIs(t, err, frame.ErrFrameTooLarge)
	require.NoError(t, frame.Encoder{}.Check(frame.MaxMessage-frame.HeaderSize), "zero value: libvirt's limit")
	require.ErrorIs(t, frame.Encoder{}.Check(frame.MaxMessage-frame.HeaderSize+1), frame.ErrFrameTooLarge)
	assert.Equal(t, 1.0, testing.AllocsPerRun(10, func() { _, _ = enc.Message(h, payload) }))

	reply, err := enc.Reply(h, []byte("ok"))
	require.NoError(t, err)
	want := h
	want.Type, want.Status = frame.TypeReply, frame.StatusOK
	assert.Equal(t, frame.Append(nil, want, []byte("ok")), reply)

	data := make([]byte, frame.Overhead+10)
	require.NoError(t, enc.Headroom(h, data))
	assert.Equal(t, frame.Append(nil, h, make([]byte, 10)), data)
	assert.Zero(t, testing.AllocsPerRun(10, func() { _ = enc.Headroom(h, data) }), "no allocation per data frame")
	require.Error(t, enc.Headroom(h, data[:frame.Overhead-1]))
	require.ErrorIs(t, enc.Headroom(h, make([]byte, frame.Overhead+100)), frame.ErrFrameTooLarge)
}

// An error reply always fits: one too large for a message is replaced by
// one that says so (it was once sent over the limit, and the peer closed
// the connection).
func TestEncoderErrorReplyFits(t *testing.T) {
	enc := frame.Encoder{Max: 1 << 10}
	h := frame.Header{Prog: 1, Vers: 2, Proc: 3, Type: frame.TypeCall, Serial: 9}
	small := enc.ErrorReply(h, frame.NewError(frame.CodeRPC, "nope"))
	want := h
	want.Type, want.Status = frame.TypeReply, frame.StatusError
	assert.Equal(t, frame.Append(nil, want, frame.EncodeError(frame.NewError(frame.CodeRPC, "nope"))), small)

	big := enc.ErrorReply(h, frame.NewError(frame.CodeRPC, "%s", strings.Repeat("x", 4<<10)))
	require.LessOrEqual(t, len(big)-frame.LenSize, 1<<10)
	e, err := frame.DecodeError(big[frame.Overhead:])
	require.NoError(t, err)
	assert.Contains(t, e.Text(), "over the message limit")
}

// Keepalive messages are byte for byte what libvirt sends (capture 02).
func TestPutKeepalive(t *testing.T) {
	var b [frame.KeepaliveSize]byte
	frame.PutKeepalive(b[:], frame.KeepalivePing)
	assert.Equal(t, mustHex(t, "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000"), b[:])
}
