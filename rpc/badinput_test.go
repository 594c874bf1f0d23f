package rpc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

func lenWord(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func rawFrame(h frame.Header, payload []byte) []byte { return frame.Append(nil, h, payload) }

// helloFrame is a HELLO call as a virtrpc client sends it.
func helloFrame(window uint32) []byte {
	h := frame.Header{Prog: frame.ControlProgram, Vers: frame.ControlVersion, Proc: frame.ControlHello}
	return rawFrame(h, frame.EncodeHello(&frame.Hello{Version: 1, Features: []string{frame.FeatureFlowControl, frame.FeatureLargeFrames, frame.FeatureBidi}, MaxStreamPayload: 1 << 20, InitialWindow: window, MaxCalls: 8}))
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	up := rpc.Procedure(verifyUploadProc)
	cases := []struct {
		name  string
		bytes func(p *rawPeer) []byte
		want  string
	}{
		{"length below 28", func(*rawPeer) []byte { return append(lenWord(27), make([]byte, 27)...) }, "frame length under the minimum"},
		{"length zero", func(*rawPeer) []byte { return lenWord(0) }, "frame length under the minimum"},
		{"length over the limit", func(*rawPeer) []byte { return lenWord(0xffffffff) }, "frame length over the limit"},
		{"garbage", func(*rawPeer) []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }, "frame length over the limit"},
		{"unknown type", func(*rawPeer) []byte { return rawFrame(frame.Header{Prog: 1, Type: 9}, nil) }, "unknown message type"},
		{"fd passing", func(*rawPeer) []byte { return rawFrame(frame.Header{Prog: 1, Type: frame.TypeCallWithFDs}, nil) }, "file descriptor passing"},
		{"reply to an unknown serial", func(*rawPeer) []byte { return rawFrame(frame.Header{Prog: 1, Type: frame.TypeReply, Serial: 77}, nil) }, "serial 77, which has no call outstanding"},
		{"credit violation", func(p *rawPeer) []byte {
			p.nc.Write(helloFrame(1 << 20))
			p.expect(frame.TypeReply, frame.StatusOK, 0)
			p.send(hdr(up, frame.TypeCall, 1, frame.StatusOK), make([]byte, 32))
			p.expect(frame.TypeReply, frame.StatusOK, 1)
			// The server granted 256 KiB (its StreamWindow); send more at once.
			return rawFrame(hdr(up, frame.TypeStream, 1, frame.StatusContinue), make([]byte, 300<<10))
		}, "past its credit"},
		{"hole on a stream not opened sparse", func(p *rawPeer) []byte {
			p.send(hdr(up, frame.TypeCall, 1, frame.StatusOK), make([]byte, 32))
			p.expect(frame.TypeReply, frame.StatusOK, 1)
			hole := make([]byte, 12)
			frame.PutHole(hole, 4096, 0)
			return rawFrame(hdr(up, frame.TypeStreamHole, 1, frame.StatusContinue), hole)
		}, "stream is not sparse"},
		{"data toward a side that only sends (native)", func(p *rawPeer) []byte {
			p.nc.Write(helloFrame(1 << 20))
			p.expect(frame.TypeReply, frame.StatusOK, 0)
			p.send(hdr(rpc.Procedure(sendProc), frame.TypeCall, 1, frame.StatusOK), sendArgs(64<<20, 1)) // a download
			p.expect(frame.TypeReply, frame.StatusOK, 1)
			return rawFrame(hdr(rpc.Procedure(sendProc), frame.TypeStream, 1, frame.StatusContinue), make([]byte, 4096))
		}, "declared direction"},
		{"a finish toward a side that only sends (native)", func(p *rawPeer) []byte {
			p.nc.Write(helloFrame(1 << 20))
			p.expect(frame.TypeReply, frame.StatusOK, 0)
			p.send(hdr(rpc.Procedure(sendProc), frame.TypeCall, 1, frame.StatusOK), sendArgs(64<<20, 1))
			p.expect(frame.TypeReply, frame.StatusOK, 1)
			return rawFrame(hdr(rpc.Procedure(sendProc), frame.TypeStream, 1, frame.StatusOK), nil)
		}, "declared direction"},
		{"a hole toward a side that only sends (compat)", func(p *rawPeer) []byte {
			f, err := os.CreateTemp(p.t.(*testing.T).TempDir(), "src")
			require.NoError(p.t, err)
			require.NoError(p.t, f.Truncate(64<<20)) // all hole, sent as one
			require.NoError(p.t, f.Close())
			p.send(hdr(rpc.Procedure(sparseDownProc), frame.TypeCall, 1, frame.StatusOK), []byte(f.Name()))
			p.expect(frame.TypeReply, frame.StatusOK, 1)
			hole := make([]byte, 12)
			frame.PutHole(hole, 4096, 0)
			return rawFrame(hdr(rpc.Procedure(sparseDownProc), frame.TypeStreamHole, 1, frame.StatusContinue), hole)
		}, "declared direction"},
		{"data toward a side that only sends (compat)", func(p *rawPeer) []byte {
			p.send(hdr(rpc.Procedure(sendProc), frame.TypeCall, 1, frame.StatusOK), sendArgs(64<<20, 1))
			p.expect(frame.TypeReply, frame.StatusOK, 1)
			return rawFrame(hdr(rpc.Procedure(sendProc), frame.TypeStream, 1, frame.StatusContinue), make([]byte, 4096))
		}, "declared direction"},
		{"truncated frame", func(*rawPeer) []byte { return append(lenWord(100), make([]byte, 50)...) }, "unexpected EOF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			conns := make(chan *rpc.Conn, 2)
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() {
				served <- rpc.Serve(ctx, l, &rpc.Options{Handlers: streamMux(t), StreamWindow: 256 << 10, MaxStreamWindow: 256 << 10}, func(c *rpc.Conn) { conns <- c })
			}()
			defer func() { cancel(); <-served }()

			// A good client first, on the same server.
			good, err := net.Dial("tcp", l.Addr().String())
			require.NoError(t, err)
			gc, err := rpc.Client(context.Background(), good, nil)
			require.NoError(t, err)
			defer gc.Close()
			<-conns

			bad, err := net.Dial("tcp", l.Addr().String())
			require.NoError(t, err)
			defer bad.Close()
			badSrv := <-conns
			p := newRawPeer(t, bad)
			_, err = bad.Write(tc.bytes(p))
			require.NoError(t, err)
			if tc.name == "truncated frame" {
				require.NoError(t, bad.(*net.TCPConn).CloseWrite())
			}
			select {
			case <-badSrv.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not close the bad connection")
			}
			err = badSrv.Err()
			require.ErrorContains(t, err, tc.want)
			if tc.name != "truncated frame" {
				var pe *rpc.ProtocolError
				require.ErrorAs(t, err, &pe, "a protocol error: %v", err)
			} else {
				require.True(t, errors.Is(err, ioErrUnexpectedEOF()), "%v", err)
			}
			// The peer sees the connection closed.
			_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, rerr := bad.Read(make([]byte, 1<<20))
			for rerr == nil {
				_, rerr = bad.Read(make([]byte, 1<<20))
			}
			assert.NotErrorIs(t, rerr, errTimeout())

			// The other connection carries on.
			got, err := gc.Call(context.Background(), echoProc, []byte("fine"))
			require.NoError(t, err)
			assert.Equal(t, "fine", string(got))
			upload(t, gc, 1<<20, 50)
		})
	}
}

func ioErrUnexpectedEOF() error { return io.ErrUnexpectedEOF }
func errTimeout() error         { return os.ErrDeadlineExceeded }
