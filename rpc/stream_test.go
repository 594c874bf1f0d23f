package rpc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var (
	verifyUploadProc = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 20} // args: sha256, then the stream
	sendProc         = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 21} // args: size, seed
	sinkFailProc     = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 22} // the receiver's sink fails
	sparseUpProc     = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 23} // args: destination path
	sparseDownProc   = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 24} // args: source path
	abortSendProc    = rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 25} // sends, then aborts
)

// streamSize is the size of the big transfer: 1 GiB, less under -short or
// the race detector (CI also runs it at full size without -race).
func streamSize() int64 {
	if testing.Short() || raceEnabled {
		return 64 << 20
	}
	return 1 << 30
}

func sendArgs(size int64, seed int) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(size))
	binary.BigEndian.PutUint64(b[8:], uint64(seed))
	return b
}

func source(size int64, seed int) io.Reader {
	return io.LimitReader(&pattern{off: seed * 4099 % len(patternBuf)}, size)
}

func digest(size int64, seed int) []byte {
	h := sha256.New()
	_, _ = io.Copy(h, source(size, seed))
	return h.Sum(nil)
}

// failingWriter fails once more than limit bytes were written to it.
type failingWriter struct{ n, limit int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	if w.n > w.limit {
		return 0, errors.New("disk full on the receiver")
	}
	return len(p), nil
}

func streamMux(_ *testing.T) *rpc.Mux {
	mux := echoMux()
	// The receiver verifies the digest and answers the sender's Close with
	// an error if the bytes differ.
	mux.Handle(verifyUploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		want := bytes.Clone(req.Payload)
		go func() {
			h := sha256.New()
			if _, err := io.Copy(h, st); err != nil {
				return // aborted: the sender knows
			}
			if got := h.Sum(nil); !bytes.Equal(got, want) {
				_ = st.CloseWithError(fmt.Errorf("sha256 mismatch: got %x want %x", got, want))
				return
			}
			_ = st.Close()
		}()
		return nil, nil
	})
	mux.Handle(sendProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		size, seed := int64(binary.BigEndian.Uint64(req.Payload)), int(binary.BigEndian.Uint64(req.Payload[8:]))
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			if _, err := io.Copy(st, source(size, seed)); err != nil {
				return
			}
			_ = st.Close()
		}()
		return nil, nil
	})
	mux.Handle(sinkFailProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() { _, _ = st.WriteTo(&failingWriter{limit: 1 << 20}) }()
		return nil, nil
	})
	mux.Handle(abortSendProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, nil)
		if err != nil {
			return nil, err
		}
		if err := req.Reply(nil); err != nil {
			return nil, err
		}
		if _, err := io.Copy(st, source(1<<20, 1)); err != nil {
			return nil, err
		}
		return nil, st.CloseWithError(errors.New("source vanished on the sender"))
	})
	mux.Handle(sparseUpProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		f, err := os.Create(string(req.Payload))
		if err != nil {
			return nil, err
		}
		st, err := req.Stream(stream.Upload, &stream.Options{Sparse: true})
		if err != nil {
			f.Close()
			return nil, err
		}
		go func() {
			defer f.Close()
			if _, err := st.WriteTo(f); err != nil {
				return
			}
			_ = st.Close()
		}()
		return nil, nil
	})
	mux.Handle(sparseDownProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		f, err := os.Open(string(req.Payload))
		if err != nil {
			return nil, err
		}
		st, err := req.Stream(stream.Download, &stream.Options{Sparse: true})
		if err != nil {
			f.Close()
			return nil, err
		}
		go func() {
			defer f.Close()
			if _, err := st.ReadFrom(f); err != nil {
				_ = st.CloseWithError(err)
				return
			}
			_ = st.Close()
		}()
		return nil, nil
	})
	return mux
}

func upload(t testing.TB, c *rpc.Conn, size int64, seed int) {
	st, _, err := c.OpenStream(context.Background(), verifyUploadProc, digest(size, seed), stream.Upload, nil)
	require.NoError(t, err)
	n, err := io.Copy(st, source(size, seed))
	require.NoError(t, err)
	require.Equal(t, size, n)
	require.NoError(t, st.Close(), "the receiver's verdict")
}

func download(t testing.TB, c *rpc.Conn, size int64, seed int) {
	st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(size, seed), stream.Download, nil)
	require.NoError(t, err)
	h := sha256.New()
	n, err := io.Copy(h, st)
	require.NoError(t, err)
	require.Equal(t, size, n)
	require.Equal(t, digest(size, seed), h.Sum(nil))
	require.NoError(t, st.Close())
}

func TestBigStreamOverTLSBothDirections(t *testing.T) {
	c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
	size := streamSize()
	t.Run("upload", func(t *testing.T) { upload(t, c, size, 1) })
	t.Run("download", func(t *testing.T) { download(t, c, size, 2) })
	st := c.Stats()
	assert.Equal(t, size, st.StreamBytesSent)
	assert.Equal(t, size, st.StreamBytesReceived)
	assert.Zero(t, st.StreamsOpen)
}

func TestBigStreamCompatMode(t *testing.T) {
	c, srv := pair(t, &rpc.Options{Negotiation: rpc.CompatOnly}, &rpc.Options{Handlers: streamMux(t)})
	require.Equal(t, rpc.ModeCompat, c.Mode())
	require.Equal(t, rpc.ModeCompat, srv.Mode())
	upload(t, c, 32<<20, 3)
	download(t, c, 32<<20, 4)
}

func TestSenderCloseReturnsReceiversSinkError(t *testing.T) {
	for _, mode := range []rpc.Negotiation{rpc.AcceptCompat, rpc.CompatOnly} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			c, _ := pair(t, &rpc.Options{Negotiation: mode}, &rpc.Options{Handlers: streamMux(t)})
			st, _, err := c.OpenStream(context.Background(), sinkFailProc, nil, stream.Upload, nil)
			require.NoError(t, err)
			_, _ = io.Copy(st, source(16<<20, 5)) // fails part way, or not at all
			err = st.Close()
			var re *rpc.Error
			require.ErrorAs(t, err, &re)
			assert.Contains(t, re.Text(), "disk full on the receiver")
		})
	}
}

func TestAbortReachesThePeer(t *testing.T) {
	t.Run("sender aborts", func(t *testing.T) {
		c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
		st, _, err := c.OpenStream(context.Background(), abortSendProc, nil, stream.Download, nil)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, st)
		var re *rpc.Error
		require.ErrorAs(t, err, &re)
		assert.Contains(t, re.Text(), "source vanished on the sender")
		assert.ErrorAs(t, st.Close(), &re)
	})
	t.Run("receiver aborts", func(t *testing.T) {
		c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
		st, _, err := c.OpenStream(context.Background(), sendProc, sendArgs(1<<30, 6), stream.Download, nil)
		require.NoError(t, err)
		_, err = io.CopyN(io.Discard, st, 1<<20)
		require.NoError(t, err)
		require.NoError(t, st.CloseWithError(errors.New("client lost interest")))
		_, err = st.Read(make([]byte, 10))
		require.ErrorContains(t, err, "client lost interest")
		// The connection is fine afterwards.
		download(t, c, 1<<20, 7)
	})
	t.Run("client aborts upload", func(t *testing.T) {
		mux := streamMux(t)
		seen := make(chan error, 1)
		abortProc := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 31}
		mux.Handle(abortProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
			st, err := req.Stream(stream.Upload, nil)
			if err != nil {
				return nil, err
			}
			go func() {
				_, err := io.Copy(io.Discard, st)
				seen <- err
				_ = st.Close()
			}()
			return nil, nil
		})
		c, _ := pair(t, nil, &rpc.Options{Handlers: mux})
		st, _, err := c.OpenStream(context.Background(), abortProc, nil, stream.Upload, nil)
		require.NoError(t, err)
		_, err = io.CopyN(st, source(1<<20, 8), 1<<19)
		require.NoError(t, err)
		require.NoError(t, st.CloseWithError(errors.New("operator pressed ctrl-c")))
		err = <-seen
		var re *rpc.Error
		require.ErrorAs(t, err, &re, "the receiver sees the sender's reason")
		assert.Contains(t, re.Text(), "operator pressed ctrl-c")
		upload(t, c, 1<<20, 9)
	})
}

// allocated returns the bytes a file really occupies on disk.
func allocated(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(path, &st))
	return st.Blocks * 512
}

func makeSparse(t *testing.T, path string) []byte {
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	data := make([]byte, 128<<10)
	for i := range data {
		data[i] = byte(i % 251)
	}
	_, err = f.Write(data)
	require.NoError(t, err)
	_, err = f.WriteAt(data, 1179648)
	require.NoError(t, err)
	want := make([]byte, 1310720)
	copy(want, data)
	copy(want[1179648:], data)
	return want
}

func TestSparseStreamKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "sparse.bin")
	want := makeSparse(t, src)
	if allocated(t, src) >= int64(len(want)) {
		t.Skip("the file system under t.TempDir does not keep holes")
	}
	c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})

	t.Run("upload", func(t *testing.T) {
		dst := filepath.Join(dir, "up.bin")
		st, _, err := c.OpenStream(context.Background(), sparseUpProc, []byte(dst), stream.Upload, &stream.Options{Sparse: true})
		require.NoError(t, err)
		f, err := os.Open(src)
		require.NoError(t, err)
		defer f.Close()
		n, err := io.Copy(st, f)
		require.NoError(t, err)
		require.EqualValues(t, len(want), n)
		require.NoError(t, st.Close())
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got), "contents")
		assert.LessOrEqual(t, allocated(t, dst), allocated(t, src), "the hole stays a hole")
	})
	t.Run("download", func(t *testing.T) {
		dst := filepath.Join(dir, "down.bin")
		st, _, err := c.OpenStream(context.Background(), sparseDownProc, []byte(src), stream.Download, &stream.Options{Sparse: true})
		require.NoError(t, err)
		f, err := os.Create(dst)
		require.NoError(t, err)
		defer f.Close()
		n, err := io.Copy(f, st)
		require.NoError(t, err)
		require.EqualValues(t, len(want), n)
		require.NoError(t, st.Close())
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got), "contents")
		assert.LessOrEqual(t, allocated(t, dst), allocated(t, src), "the hole stays a hole")
	})
	t.Run("read as zeros", func(t *testing.T) {
		st, _, err := c.OpenStream(context.Background(), sparseDownProc, []byte(src), stream.Download, &stream.Options{Sparse: true})
		require.NoError(t, err)
		var buf bytes.Buffer
		_, err = io.Copy(struct{ io.Writer }{&buf}, struct{ io.Reader }{st})
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, buf.Bytes()))
		require.NoError(t, st.Close())
	})
}

func TestPausedStreamDoesNotBlockCallsOrOtherStreams(t *testing.T) {
	const window = 256 << 10
	mux := streamMux(t)
	paused := make(chan *stream.Stream, 1)
	resume := make(chan struct{})
	var pausedSum hash.Hash
	pausedDone := make(chan error, 1)
	pausedProc := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 30}
	mux.Handle(pausedProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		paused <- st
		go func() {
			<-resume
			pausedSum = sha256.New()
			_, err := io.Copy(pausedSum, st)
			if err == nil {
				err = st.Close()
			}
			pausedDone <- err
		}()
		return nil, nil
	})
	opts := &rpc.Options{Handlers: mux, StreamWindow: window, MaxStreamWindow: window, StreamBuffer: 1 << 20}
	c, _ := pair(t, opts, opts)

	const pausedSize = 16 << 20
	st, _, err := c.OpenStream(context.Background(), pausedProc, nil, stream.Upload, nil)
	require.NoError(t, err)
	serverSide := <-paused
	writeDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(st, source(pausedSize, 10))
		if err == nil {
			err = st.Close()
		}
		writeDone <- err
	}()
	// The paused stream fills its buffer and no more.
	limit := serverSide.BufferLimit()
	require.Eventually(t, func() bool { return int64(serverSide.Buffered()) >= limit-window }, 10*time.Second, time.Millisecond)

	for i := range 20 {
		got, err := c.Call(context.Background(), echoProc, []byte{byte(i)})
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, got)
	}
	upload(t, c, 16<<20, 11)
	download(t, c, 16<<20, 12)

	assert.LessOrEqual(t, int64(serverSide.MaxBuffered()), limit, "buffered bytes stay within the stream's limit")
	assert.LessOrEqual(t, serverSide.BytesReceived(), limit, "the sender stopped at its credit")
	select {
	case err := <-writeDone:
		t.Fatalf("the paused stream's writer finished early: %v", err)
	default:
	}

	close(resume)
	require.NoError(t, <-writeDone)
	require.NoError(t, <-pausedDone)
	assert.Equal(t, digest(pausedSize, 10), pausedSum.Sum(nil))
}

func TestManyConcurrentStreams(t *testing.T) {
	c, _ := pair(t, nil, &rpc.Options{Handlers: streamMux(t)})
	const streams, size = 64, 2 << 20
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				upload(t, c, size, 100+i)
			} else {
				download(t, c, size, 100+i)
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, c.Stats().StreamsOpen)
	assert.EqualValues(t, streams, c.Stats().StreamsOpened)
}
