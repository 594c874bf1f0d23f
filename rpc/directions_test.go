package rpc_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// A download closed before its end is an abort that Close reports, in both
// modes, whether or not data was received; in native mode the sender's
// Write and Close learn it as ErrReceiverClosed (a code on the wire).
func TestDownloadClosedEarlyIsAnAbort(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts *rpc.Options
	}{{"native", nil}, {"compat", &rpc.Options{Negotiation: rpc.CompatOnly}}} {
		for _, read := range []int{0, 1} {
			t.Run(mode.name+map[int]string{0: "/nothing read", 1: "/one byte read"}[read], func(t *testing.T) {
				down := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 90}
				senderErr := make(chan error, 1)
				mux := echoMux()
				mux.Handle(down, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
					st, err := req.Stream(stream.Download, nil)
					if err != nil {
						return nil, err
					}
					go func() {
						_, err := io.Copy(st, source(64<<20, 3))
						senderErr <- errors.Join(err, st.Close())
					}()
					return nil, nil
				})
				c, _ := pair(t, mode.opts, &rpc.Options{Handlers: mux})
				st, _, err := c.OpenStream(context.Background(), down, nil, stream.Download, nil)
				require.NoError(t, err)
				if read > 0 {
					_, err = io.ReadFull(st, make([]byte, read))
					require.NoError(t, err)
				} else {
					require.Eventually(t, func() bool { return st.BytesReceived() > 0 }, 10*time.Second, time.Millisecond)
				}
				err = st.Close()
				require.ErrorIs(t, err, stream.ErrReceiverClosed, "closed before the end: not a success")
				require.ErrorIs(t, st.Close(), stream.ErrReceiverClosed, "the same outcome again")
				select {
				case err := <-senderErr:
					require.Error(t, err, "the sender is told")
					if mode.opts == nil {
						assert.ErrorIs(t, err, stream.ErrReceiverClosed, "the reason arrives as a value: %v", err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("the sender never learned of the abort")
				}
				got, err := c.Call(context.Background(), echoProc, []byte("next"))
				require.NoError(t, err, "the connection carries on")
				assert.Equal(t, "next", string(got))
			})
		}
	}
}

// Against libvirtd (played by a raw peer): a download closed before the
// end sends STREAM/ERROR without a payload (virsh's abort), which libvirtd
// acknowledges, and Close says it was closed early.
func TestCompatDownloadClosedEarlySendsAnAbort(t *testing.T) {
	for _, withData := range []bool{false, true} {
		t.Run(map[bool]string{false: "no data", true: "some data"}[withData], func(t *testing.T) {
			c, srv := compatClient(t)
			stc := openAsync(c, volDownload, stream.Download, nil)
			srv.expect(frame.TypeCall, frame.StatusOK, 0)
			srv.send(hdr(volDownload, frame.TypeReply, 0, frame.StatusOK), nil)
			st := <-stc
			require.NotNil(t, st)
			if withData {
				srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusContinue), make([]byte, 1000))
				require.Eventually(t, func() bool { return st.BytesReceived() == 1000 }, 10*time.Second, time.Millisecond)
			}
			closed := make(chan error, 1)
			go func() { closed <- st.Close() }()
			payload := srv.expect(frame.TypeStream, frame.StatusError, 0)
			assert.Empty(t, payload, "virsh's abort carries no error")
			srv.send(hdr(volDownload, frame.TypeStream, 0, frame.StatusOK), nil) // libvirtd's ack
			require.ErrorIs(t, <-closed, stream.ErrReceiverClosed)
			require.Eventually(t, func() bool { return c.Stats().StreamsOpen == 0 }, 10*time.Second, time.Millisecond)
		})
	}
}

// The sending side of a download whose peer broke the protocol (data
// against the direction) does not report success: once nothing will
// ever answer its finish, its Close fails.
func TestDownloadSenderCloseFailsWhenThePeerMisbehaves(t *testing.T) {
	down := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 91}
	closeErr := make(chan error, 1)
	mux := rpc.NewMux()
	mux.Handle(down, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		if err := req.Reply(nil); err != nil {
			return nil, err
		}
		_, _ = st.Write([]byte("some data"))
		closeErr <- st.Close()
		return nil, nil
	})
	srvConn, p := compatServer(t, mux)
	p.send(hdr(procedure(down), frame.TypeCall, 1, frame.StatusOK), nil)
	p.expect(frame.TypeReply, frame.StatusOK, 1)
	p.send(hdr(procedure(down), frame.TypeStream, 1, frame.StatusContinue), []byte("the wrong way"))
	select {
	case <-srvConn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("data against the direction did not close the connection")
	}
	var pe *rpc.ProtocolError
	require.ErrorAs(t, srvConn.Err(), &pe)
	require.ErrorIs(t, srvConn.Err(), stream.ErrDirection)
	select {
	case err := <-closeErr:
		require.Error(t, err, "no verdict came: not a success")
	case <-time.After(10 * time.Second):
		t.Fatal("the sender's Close hangs")
	}
}

// A peer's abort with a reason the library knows arrives as that value.
func TestAbortReasonsArriveAsValues(t *testing.T) {
	up := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 92}
	for _, reason := range []error{stream.ErrReceiverClosed, rpc.ErrStreamAbandoned, stream.ErrPeerFinished} {
		t.Run(reason.Error(), func(t *testing.T) {
			mux := rpc.NewMux()
			mux.Handle(up, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
				st, err := req.Stream(stream.Upload, nil)
				if err != nil {
					return nil, err
				}
				if err := req.Reply(nil); err != nil {
					return nil, err
				}
				return nil, st.CloseWithError(reason)
			})
			c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
			st, _, err := c.OpenStream(context.Background(), up, nil, stream.Upload, nil)
			require.NoError(t, err)
			err = st.Close()
			require.ErrorIs(t, err, reason)
			var re *rpc.Error
			require.ErrorAs(t, err, &re, "and it is still the peer's error payload")
			assert.EqualValues(t, frame.DomainVirtrpc, re.Domain)
		})
	}
}

// CloseWithError(nil) is our own abort: our side does not call it an
// abort by the peer; the peer's side does.
func TestCloseWithNilIsALocalAbort(t *testing.T) {
	up := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 93}
	peerErr := make(chan error, 1)
	mux := rpc.NewMux()
	mux.Handle(up, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() { _, err := io.Copy(io.Discard, st); peerErr <- err }()
		return nil, nil
	})
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	st, _, err := c.OpenStream(context.Background(), up, nil, stream.Upload, nil)
	require.NoError(t, err)
	require.NoError(t, st.CloseWithError(nil))
	_, err = st.Write([]byte("x"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, stream.ErrAborted, "a local abort is not the peer's: %v", err)
	assert.NotContains(t, err.Error(), "by peer")
	assert.NotErrorIs(t, st.Close(), stream.ErrAborted)
	assert.ErrorIs(t, <-peerErr, stream.ErrAborted, "the peer's side: aborted by its peer")
}

type xdrArgs struct {
	Name string
	Size uint64
}

type xdrReply struct {
	Token string
}

func TestOpenStreamXDR(t *testing.T) {
	down := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 94}
	mux := rpc.NewMux()
	mux.Handle(down, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		var a xdrArgs
		if err := xdr.Unmarshal(req.Payload, &a); err != nil {
			return nil, err
		}
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			_, _ = io.Copy(st, source(int64(a.Size), 5))
			_ = st.Close()
		}()
		return xdr.Marshal(xdrReply{Token: "for " + a.Name})
	})
	c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
	var r xdrReply
	st, err := c.OpenStreamXDR(context.Background(), down, xdrArgs{Name: "disk0", Size: 1 << 20}, stream.Download, nil, &r)
	require.NoError(t, err)
	assert.Equal(t, "for disk0", r.Token)
	n, err := io.Copy(io.Discard, st)
	require.NoError(t, err)
	assert.EqualValues(t, 1<<20, n)
	require.NoError(t, st.Close())

	// A reply that does not decode fails the open and aborts the stream.
	var wrong struct{ A, B, C uint64 }
	_, err = c.OpenStreamXDR(context.Background(), down, xdrArgs{Name: "disk1", Size: 1 << 20}, stream.Download, nil, &wrong)
	require.ErrorContains(t, err, "decoding reply")
	require.Eventually(t, func() bool { return c.Stats().StreamsOpen == 0 }, 10*time.Second, time.Millisecond)

	_, _, err = c.OpenStream(context.Background(), down, nil, 0, nil)
	require.ErrorContains(t, err, "direction", "an undeclared direction is refused")
}
