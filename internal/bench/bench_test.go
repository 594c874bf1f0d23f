package main

import (
	"context"
	"testing"
	"time"
)

// TestCases runs every case once at a small size on loopback, with one
// stream (and pings) and with 16 streams, to prove the harness works. The
// numbers mean nothing at this size.
func TestCases(t *testing.T) {
	e, err := newEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, bc := range allCases() {
		t.Run(bc.name, func(t *testing.T) {
			for _, n := range []int{1, 16} {
				o := measureOpts{streams: n, size: 8 << 20, maxTime: 20 * time.Second}
				if n == 1 {
					o.pingEvery = time.Millisecond
				}
				res, err := measure(context.Background(), e, bc, o)
				if err != nil {
					t.Fatal(err)
				}
				if res.bytes < o.size || res.mbps <= 0 || res.share < 0 || res.share > 1.0001 {
					t.Fatalf("%d streams: implausible result %+v", n, res)
				}
				t.Logf("%d streams: %.0f MB/s, p99 %.0f µs, slowest %.2f", n, res.mbps, res.p99, res.share)
			}
		})
	}
}

// TestWAN checks the relay: throughput near (never above) its rate, and a
// round trip of at least twice its delay.
func TestWAN(t *testing.T) {
	p := wanParams{delay: 20 * time.Millisecond, rate: 125e6, queue: 4 << 20}
	e, err := newEnv(&p)
	if err != nil {
		t.Fatal(err)
	}
	for _, bc := range allCases() {
		if bc.name != "raw-tls" && bc.name != "virtrpc" {
			continue
		}
		o := measureOpts{streams: 1, size: 16 << 20, maxTime: 10 * time.Second, pingEvery: 2 * time.Millisecond}
		res, err := measure(context.Background(), e, bc, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s@wan: %.1f MB/s, ping p50 %.1f ms", bc.name, res.mbps, res.p50/1e3)
		if res.mbps > 1.15*p.rate/1e6 {
			t.Errorf("%s@wan: %.1f MB/s, above the link's %.0f", bc.name, res.mbps, p.rate/1e6)
		}
		if res.p50 < 2*float64(p.delay.Microseconds()) {
			t.Errorf("%s@wan: ping p50 %.0f µs, under the round trip", bc.name, res.p50)
		}
	}
}

// TestCipher checks the cipher the TLS cases run (the README names it).
func TestCipher(t *testing.T) {
	e, err := newEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, s, err := e.tlsPair(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer s.Close()
	if got := cipherName(c); got != "TLS_AES_128_GCM_SHA256" {
		t.Errorf("negotiated %s", got)
	}
}
