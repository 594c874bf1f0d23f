package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// libvirt's remote program and the storage stream procedures seen in the
// captures.
var (
	volUpload   = procedure{Prog: 0x20008086, Vers: 1, Proc: 208}
	volDownload = procedure{Prog: 0x20008086, Vers: 1, Proc: 209}
)

func pattern600k() []byte {
	b := make([]byte, 614400)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// compatClient connects a CompatOnly client to a raw peer that plays
// libvirtd.
func compatClient(t *testing.T) (*rpc.Conn, *rawPeer) {
	a, b := tcpPair(t)
	c, err := rpc.Client(context.Background(), a, &rpc.Options{Negotiation: rpc.CompatOnly})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(); _ = b.Close() })
	return c, newRawPeer(t, b)
}

func openAsync(c *rpc.Conn, p procedure, dir stream.Direction, opts *stream.Options) <-chan *stream.Stream {
	ch := make(chan *stream.Stream, 1)
	go func() {
		st, _, err := c.OpenStream(context.Background(), rpc.Procedure(p), nil, dir, opts)
		if err != nil {
			st = nil
		}
		ch <- st
	}()
	return ch
}

func TestCompatClientFollowsLibvirtStreamRules(t *testing.T) {
	data := pattern600k()

	t.Run("download ends with empty CONTINUE, then OK and OK", func(t *testing.T) {
		c, srv := compatClient(t)
		stc := openAsync(c, volDownload, stream.Download, nil)
		srv.expect(frame.TypeCall, frame.StatusOK, 0)
		srv.send(hdr(volDownload, frame.TypeReply, 0, frame.StatusOK), nil)
		st := <-stc
		require.NotNil(t, st)
		// libvirtd's chunking: 262120 + 24, twice, then the rest.
		for _, part := range [][]byte{data[:262120], data[262120:262144], data[262144:524264], data[524264:524288], data[524288:]} {
			srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusContinue), part)
		}
		srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusContinue), nil)
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))
		closed := make(chan error, 1)
		go func() { closed <- st.Close() }()
		srv.expect(frame.TypeStream, frame.StatusOK, 0) // the client's finish
		srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusOK), nil)
		require.NoError(t, <-closed)
	})

	t.Run("upload ends with the client's OK, answered by OK", func(t *testing.T) {
		c, srv := compatClient(t)
		stc := openAsync(c, volUpload, stream.Upload, nil)
		srv.expect(frame.TypeCall, frame.StatusOK, 0)
		srv.send(hdr(volUpload, frame.TypeReply, 0, frame.StatusOK), nil)
		st := <-stc
		closed := make(chan error, 1)
		go func() {
			_, err := st.Write(data)
			if err == nil {
				err = st.Close()
			}
			closed <- err
		}()
		var got []byte
		for {
			h, payload := srv.recv()
			require.Equal(t, frame.TypeStream, h.Type)
			if h.Status == frame.StatusOK {
				require.Empty(t, payload)
				break
			}
			require.Equal(t, frame.StatusContinue, h.Status)
			require.NotEmpty(t, payload, "a zero-length data frame is never sent")
			require.LessOrEqual(t, len(payload), frame.MaxCompatStreamPayload)
			got = append(got, payload...)
		}
		require.True(t, bytes.Equal(data, got))
		srv.send(hdr(volUpload, frame.TypeStream, 0, frame.StatusOK), nil)
		require.NoError(t, <-closed)
	})

	t.Run("server error after the end marker", func(t *testing.T) {
		c, srv := compatClient(t)
		stc := openAsync(c, volDownload, stream.Download, nil)
		srv.expect(frame.TypeCall, frame.StatusOK, 0)
		srv.send(hdr(volDownload, frame.TypeReply, 0, frame.StatusOK), nil)
		st := <-stc
		msg := "Unable to read /srv/virt/pool/v5: Is a directory"
		e := &frame.Error{Code: 38, Domain: 38, Message: &msg, Level: 2, Str1: ptr("%s"), Str2: &msg, Int1: 21, Int2: -1}
		srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusContinue), nil)
		srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusError), frame.EncodeError(e))
		_, _ = io.Copy(io.Discard, st)
		err := st.Close()
		var re *rpc.Error
		require.ErrorAs(t, err, &re)
		assert.EqualValues(t, 38, re.Code)
		assert.EqualValues(t, 21, re.Int1)
		assert.Equal(t, msg, re.Text())
	})

	t.Run("client abort is ERROR with an empty payload", func(t *testing.T) {
		c, srv := compatClient(t)
		stc := openAsync(c, volUpload, stream.Upload, nil)
		srv.expect(frame.TypeCall, frame.StatusOK, 0)
		srv.send(hdr(volUpload, frame.TypeReply, 0, frame.StatusOK), nil)
		st := <-stc
		require.NoError(t, st.CloseWithError(errors.New("cannot read the source")))
		payload := srv.expect(frame.TypeStream, frame.StatusError, 0)
		assert.Empty(t, payload)
		srv.send(hdr(volUpload, frame.TypeStream, 0, frame.StatusOK), nil) // libvirtd's ack
		require.Eventually(t, func() bool { return c.Stats().StreamsOpen == 0 }, 10*time.Second, time.Millisecond)
		// Serials go on.
		go func() { _, _ = c.Call(context.Background(), echoProc, nil) }()
		srv.expect(frame.TypeCall, frame.StatusOK, 1)
	})
}

// compatServer serves a raw peer that plays virsh.
func compatServer(t *testing.T, mux *rpc.Mux) (*rpc.Conn, *rawPeer) {
	srv, raw := rawServer(t, &rpc.Options{Handlers: mux})
	return srv, newRawPeer(t, raw)
}

func TestCompatServerFollowsLibvirtdStreamRules(t *testing.T) {
	data := pattern600k()
	received := make(chan []byte, 1)
	readErr := make(chan error, 1)
	mux := rpc.NewMux()
	mux.Handle(rpc.Procedure(volUpload), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			b, err := io.ReadAll(st)
			if err != nil {
				readErr <- err
				_ = st.Close()
				return
			}
			received <- b
			_ = st.Close()
		}()
		return nil, nil
	})
	mux.Handle(rpc.Procedure(volDownload), func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			if _, err := st.Write(data); err == nil {
				readErr <- st.Close()
			}
		}()
		return nil, nil
	})

	t.Run("upload", func(t *testing.T) {
		_, cl := compatServer(t, mux)
		cl.send(hdr(volUpload, frame.TypeCall, 10, frame.StatusOK), nil)
		cl.expect(frame.TypeReply, frame.StatusOK, 10)
		for _, part := range [][]byte{data[:262120], data[262120:524240], data[524240:]} {
			cl.send(hdr(volUpload, frame.TypeStream, 10, frame.StatusContinue), part)
		}
		cl.send(hdr(volUpload, frame.TypeStream, 10, frame.StatusOK), nil)
		require.True(t, bytes.Equal(data, <-received))
		assert.Empty(t, cl.expect(frame.TypeStream, frame.StatusOK, 10))
	})

	t.Run("download", func(t *testing.T) {
		_, cl := compatServer(t, mux)
		cl.send(hdr(volDownload, frame.TypeCall, 15, frame.StatusOK), nil)
		cl.expect(frame.TypeReply, frame.StatusOK, 15)
		var got []byte
		for {
			payload := cl.expect(frame.TypeStream, frame.StatusContinue, 15)
			if len(payload) == 0 {
				break // libvirtd's end-of-data marker
			}
			got = append(got, payload...)
		}
		require.True(t, bytes.Equal(data, got))
		cl.send(hdr(volDownload, frame.TypeStream, 15, frame.StatusOK), nil)
		assert.Empty(t, cl.expect(frame.TypeStream, frame.StatusOK, 15))
		require.NoError(t, <-readErr, "the sender's Close")
	})

	t.Run("client abort is acknowledged with OK", func(t *testing.T) {
		_, cl := compatServer(t, mux)
		cl.send(hdr(volUpload, frame.TypeCall, 10, frame.StatusOK), nil)
		cl.expect(frame.TypeReply, frame.StatusOK, 10)
		cl.send(hdr(volUpload, frame.TypeStream, 10, frame.StatusError), nil)
		assert.Empty(t, cl.expect(frame.TypeStream, frame.StatusOK, 10))
		require.ErrorIs(t, <-readErr, stream.ErrAborted)
	})

	t.Run("events and keepalive", func(t *testing.T) {
		srv, cl := compatServer(t, mux)
		cl.send(frame.Header{Prog: frame.KeepaliveProgram, Vers: 1, Proc: frame.KeepalivePing, Type: frame.TypeMessage}, nil)
		require.NoError(t, cl.nc.SetReadDeadline(timeIn10s()))
		h, n, err := cl.fr.Next()
		require.NoError(t, err)
		assert.Equal(t, frame.Header{Prog: frame.KeepaliveProgram, Vers: 1, Proc: frame.KeepalivePong, Type: frame.TypeMessage}, h)
		assert.Zero(t, n)
		require.NoError(t, srv.Send(context.Background(), rpc.Procedure{Prog: 0x20008086, Vers: 1, Proc: 318}, make([]byte, 40)))
		cl.expect(frame.TypeMessage, frame.StatusOK, 0)
	})
}
