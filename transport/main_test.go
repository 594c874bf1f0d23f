package transport_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/internal/testcert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPKI(t *testing.T) *testcert.PKI {
	t.Helper()
	p, err := testcert.New()
	require.NoError(t, err)
	return p
}

// testCtx bounds a test's blocking calls so a bug fails instead of hanging.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// serve accepts connections on ln and runs handle for each in its own
// goroutine until ln is closed. Cleanup closes ln and waits for all of them.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// roundTrip writes msg on c and expects it echoed back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
}

// ipv6 skips the test if the host has no IPv6 loopback.
func ipv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
}
