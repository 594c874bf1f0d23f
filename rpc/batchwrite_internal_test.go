package rpc

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeBatcher records which writes came inside a batch.
type fakeBatcher struct {
	net.Conn
	mu       sync.Mutex
	in       bool
	writes   []bool // per Write: inside a batch?
	batches  int
	flushErr error
}

func (f *fakeBatcher) BatchWrites() { f.mu.Lock(); f.in = true; f.batches++; f.mu.Unlock() }
func (f *fakeBatcher) FlushWrites() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.in = false
	return f.flushErr
}

func (f *fakeBatcher) Write(p []byte) (int, error) {
	f.mu.Lock()
	f.writes = append(f.writes, f.in)
	f.mu.Unlock()
	return f.Conn.Write(p)
}

func TestLargeWritesGoThroughTheBatcher(t *testing.T) {
	a, b := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(io.Discard, b) })
	defer wg.Wait()
	defer b.Close()
	fb := &fakeBatcher{Conn: a}
	c := Server(fb, &Options{KeepaliveInterval: -1})
	defer c.Close()
	require.Same(t, fb, c.sched.batcher.(*fakeBatcher), "found at nc")
	assert.Same(t, fb, findBatcher(tls.Client(fb, &tls.Config{})).(*fakeBatcher), "found under a *tls.Conn, through NetConn")
	assert.Nil(t, findBatcher(a), "a net.Pipe has none")

	require.NoError(t, c.sched.writeNet(make([]byte, 64<<10)))
	require.NoError(t, c.sched.writeNet(make([]byte, 100)))
	fb.mu.Lock()
	assert.Equal(t, []bool{true, false}, fb.writes, "a 64 KiB frame is batched, a small message is not (it fits one record)")
	assert.Equal(t, 1, fb.batches)
	fb.flushErr = errors.New("flush failed")
	fb.mu.Unlock()
	assert.EqualError(t, c.sched.writeNet(make([]byte, 64<<10)), "flush failed", "a failed flush is the write's error")
}
