package rpc_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// BenchmarkDuplexVsTLS moves size bytes each way at once, over two raw TLS
// 1.3 connections (one per direction) and over one duplex virtrpc stream
// on one TLS 1.3 connection, alternating, and reports both rates (bytes of
// both directions over the time until both ended) and their ratio.
func BenchmarkDuplexVsTLS(b *testing.B) {
	const size = 256 << 20
	pki, err := testcert.New()
	if err != nil {
		b.Fatal(err)
	}
	var rawDur, duplexDur time.Duration
	for b.Loop() {
		rawDur += rawTLSBothWays(b, pki, size)
		duplexDur += duplexBothWays(b, pki, size)
	}
	total := float64(b.N) * 2 * size
	rawMBps := total / rawDur.Seconds() / 1e6
	dMBps := total / duplexDur.Seconds() / 1e6
	b.ReportMetric(rawMBps, "raw2-MB/s")
	b.ReportMetric(dMBps, "duplex-MB/s")
	b.ReportMetric(dMBps/rawMBps, "ratio")
	b.ReportMetric(0, "ns/op")
}

// oneWay copies size pattern bytes from w's side to r's side, then closes w.
func oneWay(w io.WriteCloser, r io.Reader, size int64) <-chan int64 {
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, r)
		got <- n
	}()
	go func() {
		_, _ = io.Copy(w, io.LimitReader(&pattern{}, size))
		_ = w.Close()
	}()
	return got
}

func rawTLSBothWays(b *testing.B, pki *testcert.PKI, size int64) time.Duration {
	c1, s1 := tlsPair(b, pki)
	c2, s2 := tlsPair(b, pki)
	defer func() {
		for _, c := range []net.Conn{c1, s1, c2, s2} {
			_ = c.Close()
		}
	}()
	start := time.Now()
	up := oneWay(c1, s1, size)
	down := oneWay(s2, c2, size)
	if n, m := <-up, <-down; n != size || m != size {
		b.Fatalf("raw TLS moved %d and %d bytes", n, m)
	}
	return time.Since(start)
}

func duplexBothWays(b *testing.B, pki *testcert.PKI, size int64) time.Duration {
	cc, sc := tlsPair(b, pki)
	proc := rpc.Procedure{Prog: 0x1234, Vers: 1, Proc: 102}
	mux := rpc.NewMux()
	serverGot := make(chan int64, 1)
	mux.Handle(proc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Duplex, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			got := make(chan int64, 1)
			go func() { n, _ := io.Copy(io.Discard, st); got <- n }()
			_, _ = io.Copy(st, io.LimitReader(&pattern{}, size))
			_ = st.CloseWrite()
			n := <-got
			serverGot <- n
			_ = st.Close() // both directions done: the verdict on the client's
		}()
		return nil, nil
	})
	srv := rpc.Server(sc, &rpc.Options{Handlers: mux})
	defer srv.Close()
	c, err := rpc.Client(context.Background(), cc, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	st, _, err := c.OpenStream(context.Background(), proc, nil, stream.Duplex, nil)
	if err != nil {
		b.Fatal(err)
	}
	clientGot := oneWay(closeWriter{st}, st, size)
	if n, m := <-clientGot, <-serverGot; n != size || m != size {
		b.Fatalf("the duplex stream moved %d and %d bytes", n, m)
	}
	d := time.Since(start)
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	return d
}

// closeWriter makes a stream's Close the end of its direction only.
type closeWriter struct{ st *stream.Stream }

func (w closeWriter) Write(p []byte) (int, error)         { return w.st.Write(p) }
func (w closeWriter) ReadFrom(r io.Reader) (int64, error) { return w.st.ReadFrom(r) }
func (w closeWriter) Close() error                        { return w.st.CloseWrite() }
