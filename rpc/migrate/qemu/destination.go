package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// DestinationOptions configure a Destination. The zero value of each field
// means its documented default; Dir is required.
type DestinationOptions struct {
	// Dir holds the unix socket QEMU's incoming migration listens on;
	// required.
	Dir string
	// Kill kills the destination QEMU when the migration fails; nil: the
	// QMP quit command.
	Kill func() error
	// BeforeResume, if not nil, runs once QEMU's incoming migration has
	// completed, with the guest still paused (to compare its memory, for
	// example); its error fails the migration in Finish.
	BeforeResume func(ctx context.Context) error
	// CompleteTimeout bounds the wait in Finish for QEMU to complete the
	// incoming migration once the streams ended. Default 60 s.
	CompleteTimeout time.Duration
}

// Destination is the migrate.DestinationDriver of a QEMU started with
// -incoming defer (and -S, so that the guest does not run until resumed).
type Destination struct {
	qmp  *Client
	opts DestinationOptions

	chans channels

	mu         sync.Mutex
	stopStatus func()
	last       MigrationInfo
}

// NewDestination returns the driver of the QEMU behind qmp.
func NewDestination(qmp *Client, opts DestinationOptions) *Destination {
	if opts.CompleteTimeout <= 0 {
		opts.CompleteTimeout = 60 * time.Second
	}
	return &Destination{qmp: qmp, opts: opts}
}

// Prepare starts QEMU's incoming migration on a unix socket and connects
// to it once per stream, the main channel first.
//
// If it fails, QEMU is killed (as Finish kills it when the migration
// fails): a destination QEMU that cannot take this migration is of no use,
// and migrate.DestinationDriver's contract is that a failed Prepare has
// cleaned up, since no Finish follows it.
func (d *Destination) Prepare(ctx context.Context, in *migrate.Incoming) (cookie []byte, sinks []io.Writer, err error) {
	defer func() {
		if err != nil {
			d.closeConns()
			if kerr := d.kill(); kerr != nil {
				err = errors.Join(err, fmt.Errorf("qemu: killing the destination QEMU: %w", kerr))
			}
		}
	}()
	if d.opts.Dir == "" {
		return nil, nil, errors.New("qemu: DestinationOptions.Dir is required")
	}
	var sc sourceCookie
	if err := json.Unmarshal(in.Cookie, &sc); err != nil {
		return nil, nil, fmt.Errorf("qemu: the source's cookie: %w", err)
	}
	if sc.Channels != len(in.Streams)-1 {
		return nil, nil, fmt.Errorf("qemu: %d streams for %d multifd channels", len(in.Streams), sc.Channels)
	}
	if err := d.qmp.setMigrationParams(ctx, sc.Channels, 0); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(d.opts.Dir, "migrate-dst.sock")
	_ = os.Remove(path)
	if err := d.qmp.Execute(ctx, "migrate-incoming", map[string]any{"uri": "unix:" + path}, nil); err != nil {
		return nil, nil, err
	}
	sinks = make([]io.Writer, 0, len(in.Streams))
	for i := range in.Streams {
		l := &lazySink{chans: &d.chans, path: path}
		if i == 0 { // the main channel: QEMU's first connection
			if err := l.dial(ctx); err != nil {
				return nil, nil, err
			}
		}
		sinks = append(sinks, l)
	}
	stop := d.qmp.watch(&d.chans, d.setStatus)
	d.mu.Lock()
	d.stopStatus = stop
	d.mu.Unlock()
	cookie, _ = json.Marshal(struct {
		QEMU string `json:"qemu"`
	}{d.qmp.Version.String()})
	return cookie, sinks, nil
}

func (d *Destination) closeConns() {
	d.mu.Lock()
	stop := d.stopStatus
	d.mu.Unlock()
	if stop != nil {
		stop()
	}
	d.chans.closeAll()
}

func (d *Destination) setStatus(mi MigrationInfo) {
	d.mu.Lock()
	d.last = mi
	d.mu.Unlock()
}

// Status returns QEMU's last query-migrate seen in Finish.
func (d *Destination) Status() MigrationInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// Finish waits for QEMU to complete the incoming migration and resumes
// the guest; on failure (the migration's or its own) it kills QEMU.
func (d *Destination) Finish(ctx context.Context, in *migrate.Incoming, failed error) ([]byte, error) {
	if failed != nil {
		d.closeConns()
		return nil, d.kill()
	}
	cookie, err := d.finish(ctx)
	d.closeConns()
	if err != nil {
		return nil, errors.Join(err, d.kill())
	}
	return cookie, nil
}

func (d *Destination) finish(ctx context.Context) ([]byte, error) {
	d.chans.closeWrite() // the data is all written: EOF after it
	wctx, cancel := context.WithTimeout(ctx, d.opts.CompleteTimeout)
	defer cancel()
	mi, err := d.qmp.waitMigration(wctx, 10*time.Millisecond)
	d.setStatus(mi)
	if err != nil {
		return nil, err
	}
	if d.opts.BeforeResume != nil {
		if err := d.opts.BeforeResume(ctx); err != nil {
			return nil, err
		}
	}
	if err := d.qmp.Execute(ctx, "cont", nil, nil); err != nil {
		return nil, err
	}
	st, err := d.qmp.QueryStatus(ctx)
	if err != nil {
		return nil, err
	}
	if st != "running" {
		return nil, fmt.Errorf("qemu: the guest is %s after cont", st)
	}
	return json.Marshal(struct {
		Status   string `json:"status"`
		Downtime int64  `json:"downtime-ms"`
	}{st, mi.Downtime})
}

func (d *Destination) kill() error {
	if d.opts.Kill != nil {
		return d.opts.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.qmp.Execute(ctx, "quit", nil, nil)
}

// sinkBuffer is the SO_SNDBUF of the connections to QEMU's incoming socket
// (the kernel caps it at net.core.wmem_max). With the default 208 KiB the
// writer woke for every ~150 KiB QEMU read; a queue this deep keeps QEMU,
// the slowest stage, fed between this side's wakeups.
const sinkBuffer = 4 << 20

// lazySink connects to QEMU's incoming socket at its first Write. QEMU 7.2
// takes its first connection for the main channel and the others for
// multifd channels, whatever they carry; the main channel's sink connects
// in Prepare, the multifd ones once their data arrives.
type lazySink struct {
	chans *channels
	path  string

	once sync.Once
	ch   io.Writer
	err  error
}

func (l *lazySink) dial(ctx context.Context) error {
	l.once.Do(func() {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", l.path)
		if err != nil {
			l.err = fmt.Errorf("qemu: connecting to the incoming migration: %w", err)
			return
		}
		if uc, ok := c.(*net.UnixConn); ok {
			_ = uc.SetWriteBuffer(sinkBuffer)
		}
		l.ch = l.chans.add(c)
	})
	return l.err
}

func (l *lazySink) Write(p []byte) (int, error) {
	if err := l.dial(context.Background()); err != nil {
		return 0, err
	}
	return l.ch.Write(p)
}
