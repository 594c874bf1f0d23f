package rpc_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// pongsUntil reads frames up to the reply to serial, counting the pongs
// before it. A pong is queued (control, written ahead of replies) as soon
// as the read loop reads a ping, so the pong of pings sent before a call
// precedes the call's reply on the wire.
func pongsUntil(t *testing.T, p *rawPeer, serial uint32) (pongs, replies int) {
	t.Helper()
	require.NoError(t, p.nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	for {
		h, _, err := p.fr.Next()
		require.NoError(t, err, "waiting for the reply to %d", serial)
		_, err = p.fr.Payload()
		require.NoError(t, err)
		switch {
		case h.Prog == frame.KeepaliveProgram && h.Proc == frame.KeepalivePong:
			pongs++
		case h.Type == frame.TypeReply:
			replies++
			if h.Serial == serial {
				return pongs, replies
			}
		}
	}
}

// The one-PONG-per-burst path (scheduler.sendPong's pongQueued) loses no
// pong in the sequences a libvirt peer makes: a ping answered alone, a
// burst answered once and the next ping answered again, and pings that
// come while the writer is stuck in a Write toward a peer that is not
// reading (the pong waits, then goes). The sequence reviewed for
// libvirtd's TestKeepalive/answered failure: pongQueued is set and cleared
// under the scheduler's lock only, collectLocked clears it as it takes the
// control queue, and every queueing kicks the writer (a kick that finds
// the wake channel full finds a wake pending), so no ping read is left
// unanswered.
func TestEveryPingBurstGetsAPong(t *testing.T) {
	srv, nc := rawServer(t, &rpc.Options{Handlers: echoMux(), KeepaliveInterval: -1})
	p := newRawPeer(t, nc)
	ping := rawFrame(frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
	burst := make([]byte, 0, 64*len(ping))
	for range 64 {
		burst = append(burst, ping...)
	}
	call := func(serial uint32, n int) []byte {
		return rawFrame(hdr(procedure(echoProc), frame.TypeCall, serial, frame.StatusOK), make([]byte, n))
	}
	for round := range uint32(300) {
		pings := ping
		if round%2 == 1 {
			pings = burst
		}
		_, err := nc.Write(append(append([]byte(nil), pings...), call(10+round, 8)...))
		require.NoError(t, err)
		pongs, _ := pongsUntil(t, p, 10+round)
		require.Positive(t, pongs, "round %d: the ping(s) before the call got no pong", round)
	}

	// Pings while the writer is stuck in the Write of a 4 MiB echo we do
	// not read yet.
	p.send(hdr(procedure(echoProc), frame.TypeCall, 1, frame.StatusOK), make([]byte, 4<<20))
	require.Eventually(t, func() bool { return srv.Stats().BytesSent > 4<<20 }, 10*time.Second, time.Millisecond, "the reply's Write under way")
	for range 10 {
		_, err := nc.Write(ping)
		require.NoError(t, err)
	}
	_, err := nc.Write(call(2, 8))
	require.NoError(t, err)
	pongs, replies := pongsUntil(t, p, 2)
	assert.Positive(t, pongs, "the pings' pong, after the reply that blocked it")
	assert.Equal(t, 2, replies)
	_, err = nc.Write(append(append([]byte(nil), ping...), call(3, 8)...))
	require.NoError(t, err)
	pongs, _ = pongsUntil(t, p, 3)
	assert.Positive(t, pongs, "and the next ping is answered again")
	assert.NoError(t, srv.Err())
}
