package rpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// Against the declared direction, from a raw peer; and MaxStreams.

// againstDirection checks that c closed with a protocol error that says
// the direction was wrong, and that st buffered nothing of it.
func againstDirection(t *testing.T, c *rpc.Conn, st *stream.Stream) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("data against the direction did not close the connection")
	}
	var pe *rpc.ProtocolError
	require.ErrorAs(t, c.Err(), &pe)
	require.ErrorIs(t, c.Err(), stream.ErrDirection)
	assert.Zero(t, st.Buffered(), "nothing buffered")
	assert.Zero(t, st.BytesReceived(), "nothing received")
	_, err := st.Write([]byte("x")) // the streams fail before Done is closed
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.ErrorIs(t, st.Close(), net.ErrClosed, "no verdict came: not a success")
	assert.Zero(t, c.Stats().StreamsOpen)
}

// A libvirt-like server (compat) and a native raw server send data or a
// hole toward a client that declared an upload.
func TestDirRawPeerSendsAgainstAnUpload(t *testing.T) {
	for _, mode := range []string{"compat", "native"} {
		for _, typ := range []frame.Type{frame.TypeStream, frame.TypeStreamHole} {
			t.Run(mode+"/"+typ.String(), func(t *testing.T) {
				defer verifyNoLeak(t, goleak.IgnoreCurrent())
				var c *rpc.Conn
				var srv *rawPeer
				if mode == "compat" {
					c, srv = compatClient(t)
				} else {
					c, srv, _ = nativeRawPeer(t)
				}
				p := procedure(dirProc)
				stc := openAsync(c, p, stream.Upload, &stream.Options{Sparse: true})
				h, _ := srv.recv()
				require.Equal(t, frame.TypeCall, h.Type)
				srv.send(hdr(p, frame.TypeReply, h.Serial, frame.StatusOK), nil)
				st := <-stc
				require.NotNil(t, st)
				payload := make([]byte, 1000)
				if typ == frame.TypeStreamHole {
					payload = make([]byte, frame.HolePayloadSize)
					frame.PutHole(payload, 4096, 0)
				}
				srv.send(hdr(p, typ, h.Serial, frame.StatusContinue), payload)
				againstDirection(t, c, st)
			})
		}
	}
}

// A libvirt-like client sends a hole toward a server's sparse download.
func TestDirRawClientSendsAHoleAgainstADownload(t *testing.T) {
	defer verifyNoLeak(t, goleak.IgnoreCurrent())
	srvSt := make(chan *stream.Stream, 1)
	mux := rpc.NewMux()
	mux.Handle(dirProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, &stream.Options{Sparse: true})
		if err != nil {
			return nil, err
		}
		srvSt <- st
		return nil, nil
	})
	srv, p := compatServer(t, mux)
	pr := procedure(dirProc)
	p.send(hdr(pr, frame.TypeCall, 1, frame.StatusOK), nil)
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	hole := make([]byte, frame.HolePayloadSize)
	frame.PutHole(hole, 4096, 0)
	p.send(hdr(pr, frame.TypeStreamHole, 1, frame.StatusContinue), hole)
	againstDirection(t, srv, <-srvSt)
}

// MaxStreams exceeded by the opener: OpenStream fails with
// ErrTooManyStreams without troubling the peer; once a stream ends, a new
// one opens.
func TestDirMaxStreamsExceededByTheOpener(t *testing.T) {
	runDir(t, nil, func(t *testing.T, mode string, dir stream.Direction) {
		su := &dirSetup{client: rpc.Options{MaxStreams: 1}}
		e := openDir(t, mode, dir, su)
		defer e.end()
		_, _, err := e.cc.OpenStream(context.Background(), dirProc, nil, dir, nil)
		require.ErrorIs(t, err, rpc.ErrTooManyStreams)
		assert.Equal(t, 1, e.sc.Stats().StreamsOpen, "the peer opened nothing more")
		require.NoError(t, e.c.CloseWithError(nil))
		_ = e.s.CloseWithError(nil)
		require.Eventually(t, func() bool { return e.cc.Stats().StreamsOpen == 0 }, 10*time.Second, 5*time.Millisecond)
		st, _, err := e.cc.OpenStream(context.Background(), dirProc, nil, dir, nil)
		require.NoError(t, err, "room again")
		_ = st.CloseWithError(nil)
	})
}

// MaxStreams exceeded by the peer: the serving side's Request.Stream fails,
// the caller's OpenStream gets the error, and nothing stays registered.
func TestDirMaxStreamsExceededByThePeer(t *testing.T) {
	runDir(t, nil, func(t *testing.T, mode string, dir stream.Direction) {
		su := &dirSetup{server: rpc.Options{MaxStreams: 1}}
		e := openDir(t, mode, dir, su)
		defer e.end()
		_, _, err := e.cc.OpenStream(context.Background(), dirProc, nil, dir, nil)
		require.Error(t, err)
		var re *rpc.Error
		require.ErrorAs(t, err, &re, "the peer's refusal: %v", err)
		assert.Contains(t, err.Error(), "too many streams")
		require.ErrorIs(t, err, rpc.ErrTooManyStreams, "the peer's refusal travels as a code")
		assert.Equal(t, int32(frame.DomainVirtrpc), re.Domain)
		assert.Equal(t, int32(frame.CodeTooManyStreams), re.Code)
		require.Eventually(t, func() bool { return e.cc.Stats().StreamsOpen == 1 }, 10*time.Second, 5*time.Millisecond,
			"the refused stream is not left registered")
		_ = e.c.CloseWithError(nil)
		_ = e.s.CloseWithError(nil)
	})
}
