package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/testcert"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// batchPair is a TLS connection over loopback TCP whose client side has a
// batchConn over a countConn; sraw is the server's socket under its TLS.
type batchPair struct {
	client *tls.Conn
	bc     *batchConn
	count  *countConn
	server *tls.Conn
	sraw   net.Conn
}

func newBatchPair(t *testing.T) *batchPair {
	t.Helper()
	p, err := testcert.New()
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept() // nil on error: the Dial below fails too
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	sraw := <-accepted
	require.NotNil(t, sraw)
	bp := &batchPair{count: &countConn{Conn: raw}, sraw: sraw}
	bp.bc = newBatchConn(bp.count)
	ccfg := p.ClientConfig()
	ccfg.DynamicRecordSizingDisabled = true // every record full: counts exact
	bp.client = tls.Client(bp.bc, ccfg)
	bp.server = tls.Server(sraw, p.ServerConfig())
	t.Cleanup(func() {
		raw.Close()
		sraw.Close()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	hs := make(chan error, 1)
	go func() { hs <- bp.server.HandshakeContext(ctx) }()
	require.NoError(t, bp.client.HandshakeContext(ctx))
	require.NoError(t, <-hs)
	return bp
}

// readAll reads n bytes on the server side, in a goroutine.
func (bp *batchPair) readAll(n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		m, _ := io.ReadFull(bp.server, b)
		got <- b[:m]
	}()
	return got
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

func TestBatchWritesGatherTheRecordsOfAWrite(t *testing.T) {
	bp := newBatchPair(t)
	msg := randomBytes(64 << 10) // four full records
	big := randomBytes(1 << 20)
	got := bp.readAll(2*len(msg) + len(big))

	before := bp.count.writes.Load()
	_, err := bp.client.Write(msg)
	require.NoError(t, err)
	assert.Equal(t, int64(4), bp.count.writes.Load()-before, "outside a batch: one write per record, as without batchConn")

	before = bp.count.writes.Load()
	bp.bc.BatchWrites()
	_, err = bp.client.Write(msg)
	require.NoError(t, err)
	assert.Equal(t, before, bp.count.writes.Load(), "nothing is written before FlushWrites")
	require.NoError(t, bp.bc.FlushWrites())
	assert.Equal(t, int64(1), bp.count.writes.Load()-before, "the batch's four records go out in one write")

	// 64 records of 16406 bytes: 15 fit the 256 KiB bound at a time.
	before = bp.count.writes.Load()
	bp.bc.BatchWrites()
	_, err = bp.client.Write(big)
	require.NoError(t, err)
	require.NoError(t, bp.bc.FlushWrites())
	assert.Equal(t, int64(5), bp.count.writes.Load()-before, "a large Write is written in bounded pieces")
	assert.Nil(t, bp.bc.buf, "between batches the connection holds no batch buffer")

	want := append(append(append([]byte{}, msg...), msg...), big...)
	assert.True(t, bytes.Equal(want, <-got), "the server reads every byte in order")
}

func TestBatchWriteDeadline(t *testing.T) {
	bp := newBatchPair(t)
	require.NoError(t, bp.client.SetWriteDeadline(time.Now().Add(-time.Second)))
	bp.bc.BatchWrites()
	_, err := bp.client.Write([]byte("held"))
	require.NoError(t, err, "in a batch the record is only copied")
	err = bp.bc.FlushWrites()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the flush meets the deadline")

	require.NoError(t, bp.client.SetWriteDeadline(time.Time{}))
	_, err = bp.client.Write([]byte("after"))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "after a failed flush every write fails with its error, as a tls.Conn does after a timeout")
	require.ErrorIs(t, bp.bc.FlushWrites(), os.ErrDeadlineExceeded)

	require.NoError(t, bp.client.SetReadDeadline(time.Now().Add(-time.Second)))
	_, err = bp.client.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "read deadlines pass through")
}

func TestBatchCloseEndsAFlushTowardAPeerThatReadsNothing(t *testing.T) {
	bp := newBatchPair(t)
	msg := randomBytes(64 << 10)
	flushed := make(chan struct{})
	var werr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			bp.bc.BatchWrites()
			_, err := bp.client.Write(msg)
			if ferr := bp.bc.FlushWrites(); err == nil {
				err = ferr
			}
			if err != nil {
				werr = err
				return
			}
			if i == 0 {
				close(flushed)
			}
		}
	})
	<-flushed // the server reads nothing: the writer fills the socket and blocks
	// rpc closes the socket under the TLS layer (closeSocket), through NetConn.
	require.NoError(t, bp.client.NetConn().(interface{ NetConn() net.Conn }).NetConn().Close())
	wg.Wait()
	assert.ErrorIs(t, werr, net.ErrClosed)
}

func TestBatchTLSCloseAndCloseWrite(t *testing.T) {
	bp := newBatchPair(t)
	bp.bc.BatchWrites()
	_, err := bp.client.Write([]byte("last words"))
	require.NoError(t, err)
	require.NoError(t, bp.bc.FlushWrites())
	require.NoError(t, bp.client.CloseWrite(), "close_notify goes out through batchConn")
	b, err := io.ReadAll(bp.server)
	require.NoError(t, err, "the server reads to a clean EOF")
	assert.Equal(t, "last words", string(b))

	// Half-closed: the other direction still works.
	_, err = bp.server.Write([]byte("reply"))
	require.NoError(t, err)
	r := make([]byte, 5)
	_, err = io.ReadFull(bp.client, r)
	require.NoError(t, err)
	assert.Equal(t, "reply", string(r))

	// batchConn.CloseWrite half-closes the socket, as *net.TCPConn's does.
	require.NoError(t, bp.bc.CloseWrite())
	_, err = bp.sraw.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the server's socket sees the FIN")
	require.NoError(t, bp.client.Close())

	a, b2 := net.Pipe()
	defer a.Close()
	defer b2.Close()
	assert.ErrorIs(t, newBatchConn(a).CloseWrite(), errors.ErrUnsupported, "a connection without CloseWrite")
}

// A record the client cannot decrypt makes its Read write an alert while
// another goroutine writes batches: the alert goes out between whole
// records (crypto/tls serializes them), never inside a batch's bytes.
func TestBatchReadSideAlertDuringBatches(t *testing.T) {
	bp := newBatchPair(t)
	const chunk = 64 << 10
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		msg := make([]byte, chunk)
		for i := 0; ; i++ {
			for j := range msg {
				msg[j] = byte(i*chunk + j) // the stream's bytes are their offsets, mod 256
			}
			bp.bc.BatchWrites()
			_, err := bp.client.Write(msg)
			if ferr := bp.bc.FlushWrites(); err == nil {
				err = ferr
			}
			if err != nil {
				return // the alert's error, once the read below failed
			}
			sent.Add(chunk)
		}
	})
	var rerr error
	wg.Go(func() {
		_, rerr = bp.client.Read(make([]byte, 1))
	})
	// Let some batches through, then a forged application-data record.
	first := make([]byte, 3*chunk)
	_, err := io.ReadFull(bp.server, first)
	require.NoError(t, err)
	_, err = bp.sraw.Write(append([]byte{23, 3, 3, 0, 32}, make([]byte, 32)...))
	require.NoError(t, err)

	var off int64
	buf := make([]byte, 32<<10)
	check := func(b []byte) {
		for i, c := range b {
			if c != byte(off+int64(i)) {
				require.Failf(t, "corrupt stream", "byte %d is %d", off+int64(i), c)
			}
		}
		off += int64(len(b))
	}
	check(first)
	for {
		n, err := bp.server.Read(buf)
		check(buf[:n])
		if err != nil {
			var op *net.OpError
			if assert.ErrorAs(t, err, &op) {
				assert.Equal(t, "remote error", op.Op, "the server ends on the client's alert, not on a broken record: %v", err)
			}
			break
		}
	}
	wg.Wait()
	assert.Error(t, rerr, "the client's Read fails on the forged record")
	assert.LessOrEqual(t, off, sent.Load()+chunk, "the server got only what the client wrote")
}

// Users get batchConn by default: both ends of DialTLS and ListenTLS have
// it under their TLS, TCP and unix alike, and Tune still finds the socket.
func TestDialListenTLSHaveBatchConn(t *testing.T) {
	p, err := testcert.New()
	require.NoError(t, err)
	for _, network := range []string{"tcp", "unix"} {
		for _, ack := range []bool{false, true} {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = t.TempDir() + "/b.sock"
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			ln, err := ListenTLS(ctx, network, addr, &TLSOptions{Config: p.ServerConfig(), LibvirtAck: ack})
			require.NoError(t, err)
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					err = Handshake(ctx, c)
				}
				if err != nil {
					c = nil
				}
				accepted <- c
			}()
			tc, err := DialTLS(ctx, network, ln.Addr().String(), &TLSOptions{Config: p.ClientConfig(), LibvirtAck: ack})
			require.NoError(t, err)
			sc := <-accepted
			require.NotNil(t, sc)
			assert.IsType(t, &batchConn{}, tc.NetConn(), "%s: DialTLS", network)
			assert.IsType(t, &batchConn{}, sc.(interface{ NetConn() net.Conn }).NetConn(), "%s, ack %v: ListenTLS", network, ack)
			if network == "tcp" {
				assert.NotNil(t, tcpConn(tc), "Tune finds the TCP socket under batchConn")
				assert.NoError(t, SetNotSentLowat(sc, 16<<10))
			}
			tc.Close()
			sc.Close()
			ln.Close()
			cancel()
		}
	}
}
