package rpc_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// holdProc's handler opens a download and holds it until release closes.
func holdMux(release <-chan struct{}) *rpc.Mux {
	mux := echoMux()
	mux.Handle(holdProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			<-release
			_ = st.Close()
		}()
		return nil, nil
	})
	return mux
}

var holdProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 95}

// Options.MaxStreams bounds the streams of a connection: the opener gets
// ErrTooManyStreams, and a peer that opens more gets its call refused.
func TestMaxStreams(t *testing.T) {
	for _, mode := range []string{"native", "compat"} {
		t.Run(mode+"/opener", func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			copts := &rpc.Options{MaxStreams: 2}
			if mode == "compat" {
				copts.Negotiation = rpc.CompatOnly
			}
			c, _ := pair(t, copts, &rpc.Options{Handlers: holdMux(release)})
			for range 2 {
				_, _, err := c.OpenStream(context.Background(), holdProc, nil, stream.Download, nil)
				require.NoError(t, err)
			}
			_, _, err := c.OpenStream(context.Background(), holdProc, nil, stream.Download, nil)
			require.ErrorIs(t, err, rpc.ErrTooManyStreams)
			_, err = c.Call(context.Background(), echoProc, []byte("x"))
			require.NoError(t, err, "calls go on")
		})
		t.Run(mode+"/peer", func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			copts := &rpc.Options{}
			if mode == "compat" {
				copts.Negotiation = rpc.CompatOnly
			}
			c, _ := pair(t, copts, &rpc.Options{Handlers: holdMux(release), MaxStreams: 2})
			for range 2 {
				_, _, err := c.OpenStream(context.Background(), holdProc, nil, stream.Download, nil)
				require.NoError(t, err)
			}
			_, _, err := c.OpenStream(context.Background(), holdProc, nil, stream.Download, nil)
			var re *rpc.Error
			require.ErrorAs(t, err, &re, "the peer's call is refused")
			assert.Contains(t, re.Text(), "too many streams")
			assert.Equal(t, 2, c.Stats().StreamsOpen, "the refused stream is not left registered")
		})
	}
}

// Stream data that arrives before the handler opened the stream is
// dropped; the stream then fails instead of acknowledging an upload it did
// not get whole (compat mode: a libvirt client waits for the reply, a
// hostile or buggy one need not).
func TestEarlyUploadDataFailsTheStream(t *testing.T) {
	up := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 96}
	open := make(chan struct{})
	readErr := make(chan error, 1)
	mux := rpc.NewMux()
	mux.Handle(up, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		<-open
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			buf := make([]byte, 1<<20)
			_, err := st.Read(buf)
			for err == nil {
				_, err = st.Read(buf)
			}
			readErr <- errors.Join(err, st.Close())
		}()
		return nil, nil
	})
	srv, raw := rawServer(t, &rpc.Options{Handlers: mux})
	p := newRawPeer(t, raw)
	p.send(hdr(procedure(up), frame.TypeCall, 1, frame.StatusOK), nil)
	p.send(hdr(procedure(up), frame.TypeStream, 1, frame.StatusContinue), []byte("first chunk, before the reply"))
	require.Eventually(t, func() bool { return srv.Stats().FramesReceived >= 2 }, 10*time.Second, time.Millisecond)
	close(open)
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	p.send(hdr(procedure(up), frame.TypeStream, 1, frame.StatusContinue), []byte("second chunk"))
	p.send(hdr(procedure(up), frame.TypeStream, 1, frame.StatusOK), nil) // the client's finish
	payload := p.expect(frame.TypeStream, frame.StatusError, 1)
	fe, err := frame.DecodeError(payload)
	require.NoError(t, err)
	assert.EqualValues(t, frame.DomainVirtrpc, fe.Domain)
	assert.EqualValues(t, frame.CodeEarlyStreamData, fe.Code, "not an OK: the first chunk was never received")
	select {
	case err := <-readErr:
		require.Error(t, err, "the handler's side fails too")
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's read hangs")
	}
}

// WriteHole and Finish return within a few ms of their ctx ending, also
// toward a peer that reads nothing (the stream's queue is full and the
// socket blocked).
func TestStreamCallsReturnWithTheirCtx(t *testing.T) {
	up := procedure{Prog: 0x1234, Vers: 1, Proc: 97}
	for _, name := range []string{"WriteHole", "Finish"} {
		t.Run(name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			a, b := stalledPair(t)
			c, err := rpc.Client(context.Background(), a, &rpc.Options{Negotiation: rpc.CompatOnly, KeepaliveInterval: -1})
			require.NoError(t, err)
			p := newRawPeer(t, b)
			stc := make(chan *stream.Stream, 1)
			go func() {
				st, _, err := c.OpenStream(context.Background(), rpc.Procedure(up), nil, stream.Upload, &stream.Options{Sparse: true})
				if err != nil {
					st = nil
				}
				stc <- st
			}()
			p.expect(frame.TypeCall, frame.StatusOK, 0)
			p.send(hdr(up, frame.TypeReply, 0, frame.StatusOK), nil)
			st := <-stc
			require.NotNil(t, st)
			// Fill the queue and the socket; the peer reads no more.
			require.NoError(t, st.SetWriteDeadline(time.Now().Add(300*time.Millisecond)))
			big := make([]byte, 1<<20)
			for {
				if _, err := st.Write(big); err != nil {
					require.ErrorIs(t, err, os.ErrDeadlineExceeded)
					break
				}
			}
			require.NoError(t, st.SetWriteDeadline(time.Time{}))
			if name == "WriteHole" {
				returnsWithCtx(t, func(ctx context.Context) error { return st.WriteHole(ctx, 1<<20) })
			} else {
				returnsWithCtx(t, st.Finish)
			}
			_ = st.CloseWithError(nil)
			require.NoError(t, c.Close())
			verifyNoLeak(t, ignore)
		})
	}
}
