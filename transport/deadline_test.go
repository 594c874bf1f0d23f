package transport_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/transport"
)

// isTimeout reports whether err says a deadline passed, in either of the
// ways the package documents.
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}

// silentListener listens on ep and never accepts: the kernel completes
// connections through the backlog, and nobody ever answers them.
func silentListener(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestDialTLSHandshakeDeadline(t *testing.T) {
	p := newPKI(t)
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "silent.sock")
			}
			ln := silentListener(t, network, addr)
			ignore := goleak.IgnoreCurrent()

			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			c, err := transport.DialTLS(ctx, network, ln.Addr().String(),
				&transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: true})
			elapsed := time.Since(start)

			assert.Nil(t, c)
			require.Error(t, err)
			assert.True(t, isTimeout(err), "not a deadline error: %v", err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, elapsed, 5*time.Second)
			t.Log(err)
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestDialTLSHandshakeCanceled(t *testing.T) {
	p := newPKI(t)
	ln := silentListener(t, "tcp", "127.0.0.1:0")
	ignore := goleak.IgnoreCurrent()

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{Config: p.ClientConfig()})
	assert.ErrorIs(t, err, context.Canceled)
	t.Log(err)
	goleak.VerifyNone(t, ignore)
}

// TestDialTLSAckDeadline: the handshake completes but the server never
// sends libvirt's acknowledgement.
func TestDialTLSAckDeadline(t *testing.T) {
	p := newPKI(t)
	ln, err := transport.ListenTLS(testCtx(t), "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: p.ServerConfig()})
	require.NoError(t, err)
	release := make(chan struct{})
	serve(t, ln, func(c net.Conn) {
		assert.NoError(t, transport.Handshake(context.Background(), c))
		<-release // no ack
	})
	defer close(release)
	ignore := goleak.IgnoreCurrent()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = transport.DialTLS(ctx, "tcp", ln.Addr().String(),
		&transport.TLSOptions{Config: p.ClientConfig(), LibvirtAck: true})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, transport.ErrLibvirtRefused)
	assert.ErrorContains(t, err, "acknowledgement")
	t.Log(err)
	// The server's handler, parked on release, is the test's own.
	goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/virtrpc/virtrpc/transport_test.TestDialTLSAckDeadline.func1"))
}

// TestServerHandshakeDeadline: a client connects and never says a word.
func TestServerHandshakeDeadline(t *testing.T) {
	p := newPKI(t)
	for _, ack := range []bool{false, true} {
		ln, err := transport.ListenTLS(testCtx(t), "tcp", "127.0.0.1:0",
			&transport.TLSOptions{Config: p.ServerConfig(), LibvirtAck: ack})
		require.NoError(t, err)
		defer ln.Close()

		raw, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer raw.Close()
		c, err := ln.Accept()
		require.NoError(t, err, "Accept must not wait for the handshake")
		ignore := goleak.IgnoreCurrent()

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = transport.Handshake(ctx, c)
		cancel()
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		t.Log(err)
		_, err = c.Write([]byte("x"))
		assert.Error(t, err, "the connection is unusable afterwards")
		goleak.VerifyNone(t, ignore)
		c.Close()
	}
}

func TestHandshakeIgnoresPlainConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	assert.NoError(t, transport.Handshake(testCtx(t), a))
}
