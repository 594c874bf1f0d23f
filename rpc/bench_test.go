package rpc_test

import (
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
	"github.com/virtrpc/virtrpc/transport"
)

// tlsPair returns both ends of a TLS 1.3 connection over loopback TCP from
// transport's DialTLS and ListenTLS, as users get them (tuned, and with
// the batching of TLS records under the tls.Conn).
func tlsPair(tb testing.TB, pki *testcert.PKI) (client, server net.Conn) {
	tb.Helper()
	ctx := context.Background()
	l, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: pki.ServerConfig()})
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		sc, err := l.Accept()
		if err == nil {
			if err = transport.Handshake(ctx, sc); err != nil {
				sc.Close()
			}
		}
		if err != nil {
			sc = nil
		}
		accepted <- sc
	}()
	cc, err := transport.DialTLS(ctx, "tcp", l.Addr().String(), &transport.TLSOptions{Config: pki.ClientConfig()})
	if err != nil {
		tb.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		tb.Fatal("server handshake failed")
	}
	return cc, sc
}

// BenchmarkStreamVsTLS moves the same bytes over raw TLS 1.3 and over one
// virtrpc stream on TLS 1.3, alternating, and reports both rates, their
// ratio, the stream's allocations per MiB, and the latency of a small call
// made every 2 ms on the same connection while the stream saturates it.
// The environment variables W and MW set the server's StreamWindow and
// MaxStreamWindow, to explore the latency/throughput trade-off; NOPING=1
// drops the calls; VERBOSE=1 logs each iteration.
func BenchmarkStreamVsTLS(b *testing.B) {
	const size = 512 << 20
	pki, err := testcert.New()
	if err != nil {
		b.Fatal(err)
	}
	var rawDur, rpcDur time.Duration
	var lat []time.Duration
	var mallocs, allocBytes, rawMallocs uint64
	for b.Loop() {
		d, m := rawTLSCopy(b, pki, size)
		rawDur += d
		rawMallocs += m
		d, l, m, ab := streamCopy(b, pki, size)
		rpcDur += d
		if os.Getenv("VERBOSE") != "" {
			b.Logf("stream %v, raw TLS so far %v", d, rawDur)
		}
		lat = append(lat, l...)
		mallocs += m
		allocBytes += ab
	}
	n := float64(b.N)
	mib := n * size / (1 << 20)
	rawMBps := n * size / rawDur.Seconds() / 1e6
	rpcMBps := n * size / rpcDur.Seconds() / 1e6
	b.ReportMetric(rawMBps, "raw-MB/s")
	b.ReportMetric(rpcMBps, "stream-MB/s")
	b.ReportMetric(rpcMBps/rawMBps, "ratio")
	b.ReportMetric(float64(mallocs)/mib, "allocs/MiB")
	b.ReportMetric(float64(rawMallocs)/mib, "raw-allocs/MiB")
	b.ReportMetric(float64(allocBytes)/mib, "B/MiB")
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "call-p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "call-p99-µs")
	}
	b.ReportMetric(float64(lastWindow.Load())/1024, "window-KiB")
	b.ReportMetric(0, "ns/op")
}

var lastWindow atomic.Int64

// rawTLSCopy returns the time and the allocations of the transfer, counted
// after the handshake as streamCopy counts them.
func rawTLSCopy(b *testing.B, pki *testcert.PKI, size int64) (time.Duration, uint64) {
	cc, sc := tlsPair(b, pki)
	defer cc.Close()
	defer sc.Close()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, sc)
		done <- n
	}()
	if _, err := io.Copy(cc, io.LimitReader(&pattern{}, size)); err != nil {
		b.Fatal(err)
	}
	cc.Close()
	if n := <-done; n != size {
		b.Fatalf("raw TLS moved %d bytes", n)
	}
	d := time.Since(start)
	runtime.ReadMemStats(&m1)
	return d, m1.Mallocs - m0.Mallocs
}

func streamCopy(b *testing.B, pki *testcert.PKI, size int64) (time.Duration, []time.Duration, uint64, uint64) {
	cc, sc := tlsPair(b, pki)
	mux := rpc.NewMux()
	mux.Handle(echoProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) { return req.Payload, nil })
	received := make(chan int64, 1)
	mux.Handle(uploadProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			n, _ := io.Copy(io.Discard, st)
			lastWindow.Store(st.Window())
			_ = st.Close()
			received <- n
		}()
		return nil, nil
	})
	srv := rpc.Server(sc, &rpc.Options{Handlers: mux, StreamWindow: envInt("W", 0), MaxStreamWindow: envInt("MW", 0)})
	defer srv.Close()
	ctx := context.Background()
	c, err := rpc.Client(ctx, cc, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	st, _, err := c.OpenStream(ctx, uploadProc, nil, stream.Upload, nil)
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var lat []time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		payload := make([]byte, 64)
		if os.Getenv("NOPING") != "" {
			<-stop
			return
		}
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			t0 := time.Now()
			if _, err := c.Call(ctx, echoProc, payload); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t0))
		}
	}()
	if _, err := io.Copy(st, io.LimitReader(&pattern{}, size)); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	runtime.ReadMemStats(&ms1)
	close(stop)
	wg.Wait()
	if n := <-received; n != size {
		b.Fatalf("stream moved %d bytes", n)
	}
	return d, lat, ms1.Mallocs - ms0.Mallocs, ms1.TotalAlloc - ms0.TotalAlloc
}

func envInt(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return d
}
