package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	pkiOnce sync.Once
	pki     *testcert.PKI
)

// link is a source connection to a destination serving a Receiver, over
// real TLS 1.3 on loopback.
type link struct {
	src *rpc.Conn
	dst *rpc.Conn
	rcv *migrate.Receiver
}

// newLink connects a source to a destination driven by drv. compat makes
// the connection run libvirt's protocol.
func newLink(t *testing.T, drv migrate.DestinationDriver, ropts *migrate.ReceiverOptions, compat bool) *link {
	t.Helper()
	pkiOnce.Do(func() {
		var err error
		pki, err = testcert.New()
		if err != nil {
			panic(err)
		}
	})
	ctx := context.Background()
	l, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: pki.ServerConfig()})
	require.NoError(t, err)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil { // the server's handshake runs on first use: run it now
			if hs, ok := c.(interface{ HandshakeContext(context.Context) error }); ok {
				if err := hs.HandshakeContext(ctx); err != nil {
					_ = c.Close()
					c = nil
				}
			}
		}
		accepted <- c
	}()
	cc, err := transport.DialTLS(ctx, "tcp", l.Addr().String(), &transport.TLSOptions{Config: pki.ClientConfig()})
	require.NoError(t, err)
	sc := <-accepted
	require.NoError(t, l.Close())
	require.NotNil(t, sc)

	rcv := migrate.NewReceiver(drv, ropts)
	mux := rpc.NewMux()
	rcv.Register(mux)
	dst := rpc.Server(sc, &rpc.Options{Handlers: mux})
	var opts rpc.Options
	if compat {
		opts.Negotiation = rpc.CompatOnly
	}
	src, err := rpc.Client(ctx, cc, &opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = src.Close()
		_ = dst.Close()
		_ = rcv.Close()
	})
	return &link{src: src, dst: dst, rcv: rcv}
}

// srcDriver is a scripted source host.
type srcDriver struct {
	plan     migrate.Plan
	beginErr error
	// perform returns the readers; nil: readers from data.
	perform      func(ctx context.Context, cookie []byte) ([]io.Reader, error)
	data         [][]byte
	confirmErr   error
	afterPerform []byte // the Perform cookie

	mu            sync.Mutex
	performCookie []byte
	confirmCookie []byte
	confirmed     []error // every Confirm's failed argument
}

func (d *srcDriver) Begin(ctx context.Context) (migrate.Plan, error) {
	return d.plan, d.beginErr
}

func (d *srcDriver) Perform(ctx context.Context, cookie []byte) ([]io.Reader, error) {
	d.mu.Lock()
	d.performCookie = bytes.Clone(cookie)
	d.mu.Unlock()
	if d.perform != nil {
		return d.perform(ctx, cookie)
	}
	var rs []io.Reader
	for _, b := range d.data {
		rs = append(rs, bytes.NewReader(b))
	}
	return rs, nil
}

// PerformCookie makes srcDriver a migrate.PerformCookier.
func (d *srcDriver) PerformCookie(ctx context.Context) ([]byte, error) {
	return d.afterPerform, nil
}

func (d *srcDriver) Confirm(ctx context.Context, cookie []byte, failed error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.confirmCookie = bytes.Clone(cookie)
	d.confirmed = append(d.confirmed, failed)
	if failed == nil {
		return d.confirmErr
	}
	return nil
}

// dstDriver is a scripted destination host.
type dstDriver struct {
	prepareCookie, finishCookie []byte
	// sinks returns the writers; nil: in-memory buffers.
	sinks   func(in *migrate.Incoming) []io.Writer
	prepare func(ctx context.Context) error // runs in Prepare
	finish  func(ctx context.Context) error // runs in a Finish without failure

	mu            sync.Mutex
	incoming      *migrate.Incoming
	bufs          []*bytes.Buffer
	finishes      []error // every Finish's failed argument
	performCookie []byte  // as Finish saw it
}

func (d *dstDriver) Prepare(ctx context.Context, in *migrate.Incoming) ([]byte, []io.Writer, error) {
	d.mu.Lock()
	d.incoming = in
	d.mu.Unlock()
	if d.prepare != nil {
		if err := d.prepare(ctx); err != nil {
			return nil, nil, err
		}
	}
	if d.sinks != nil {
		return d.prepareCookie, d.sinks(in), nil
	}
	var ws []io.Writer
	d.mu.Lock()
	for range in.Streams {
		b := &bytes.Buffer{}
		d.bufs = append(d.bufs, b)
		ws = append(ws, b)
	}
	d.mu.Unlock()
	return d.prepareCookie, ws, nil
}

func (d *dstDriver) Finish(ctx context.Context, in *migrate.Incoming, failed error) ([]byte, error) {
	d.mu.Lock()
	d.finishes = append(d.finishes, failed)
	if failed == nil {
		d.performCookie = bytes.Clone(in.PerformCookie)
	}
	d.mu.Unlock()
	if failed == nil && d.finish != nil {
		if err := d.finish(ctx); err != nil {
			return nil, err
		}
	}
	return d.finishCookie, nil
}

func (d *dstDriver) finishCalls() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]error(nil), d.finishes...)
}

// doneRecorder collects a Receiver's OnDone reports.
type doneRecorder struct {
	mu   sync.Mutex
	errs map[string]error
	ch   chan string
}

func newDoneRecorder() *doneRecorder {
	return &doneRecorder{errs: map[string]error{}, ch: make(chan string, 16)}
}

func (r *doneRecorder) onDone(in *migrate.Incoming, err error) {
	r.mu.Lock()
	r.errs[in.ID] = err
	r.mu.Unlock()
	r.ch <- in.ID
}

// wait returns the outcome of migration id on the destination.
func (r *doneRecorder) wait(t *testing.T, id string) error {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		err, ok := r.errs[id]
		r.mu.Unlock()
		if ok {
			return err
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("the destination never reported the end of %s", id)
		}
	}
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// asMigrateError asserts that err is a migration *Error of phase and side
// whose reason mentions why.
func requireMigrateError(t *testing.T, err error, phase migrate.Phase, side migrate.Side, why string) *migrate.Error {
	t.Helper()
	var me *migrate.Error
	require.True(t, errors.As(err, &me), "not a *migrate.Error: %v", err)
	require.Equal(t, phase, me.Phase, "phase of %v", err)
	require.Equal(t, side, me.Side, "side of %v", err)
	require.Contains(t, me.Err.Error(), why)
	return me
}

// blockingReader returns its data slowly: n bytes, then blocks until
// closed.
type blockingReader struct {
	once   sync.Once
	closed chan struct{}
	first  []byte
}

func newBlockingReader(first []byte) *blockingReader {
	return &blockingReader{closed: make(chan struct{}), first: first}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	<-b.closed
	return 0, errors.New("reader closed")
}

func (b *blockingReader) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
