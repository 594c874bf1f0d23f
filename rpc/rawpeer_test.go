package rpc_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// rawPeer drives one end of a connection frame by frame, to act as libvirt
// would or to misbehave on purpose.
type rawPeer struct {
	t  testing.TB
	nc net.Conn
	fr *frame.Reader
	fw *frame.Writer
}

func newRawPeer(t testing.TB, nc net.Conn) *rawPeer {
	return &rawPeer{t: t, nc: nc, fr: frame.NewReader(bufio.NewReader(nc), nil), fw: frame.NewWriter(nc, 0)}
}

func (p *rawPeer) send(h frame.Header, payload []byte) {
	p.t.Helper()
	require.NoError(p.t, p.fw.WriteFrame(h, payload))
}

func (p *rawPeer) recv() (frame.Header, []byte) {
	p.t.Helper()
	require.NoError(p.t, p.nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	for {
		h, _, err := p.fr.Next()
		require.NoError(p.t, err)
		payload, err := p.fr.Payload()
		require.NoError(p.t, err)
		if h.Prog == frame.KeepaliveProgram {
			continue
		}
		return h, payload
	}
}

// expect reads the next frame and checks its type, status and serial.
func (p *rawPeer) expect(typ frame.Type, status frame.Status, serial uint32) []byte {
	p.t.Helper()
	h, payload := p.recv()
	require.Equal(p.t, typ, h.Type, "type of %s", h)
	require.Equal(p.t, status, h.Status, "status of %s", h)
	require.Equal(p.t, serial, h.Serial, "serial of %s", h)
	return payload
}

func hdr(p procedure, typ frame.Type, serial uint32, status frame.Status) frame.Header {
	return frame.Header{Prog: p.Prog, Vers: p.Vers, Proc: p.Proc, Type: typ, Serial: serial, Status: status}
}

type procedure = struct {
	Prog uint32
	Vers uint32
	Proc int32
}

func timeIn10s() time.Time { return time.Now().Add(10 * time.Second) }
