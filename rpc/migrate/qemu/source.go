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

// SourceOptions configure a Source. The zero value of each field means its
// documented default; Dir is required.
type SourceOptions struct {
	// Dir holds the unix socket QEMU migrates to; required.
	Dir string
	// Channels is the number of multifd channels; 0 (the default) is no
	// multifd: one stream.
	Channels int
	// MaxBandwidth is QEMU's max-bandwidth during the migration, bytes
	// per second. Default 100 GiB/s, so that QEMU's own cap (128 MiB/s by
	// default) never limits the tunnel; the helper's limit applies.
	MaxBandwidth int64
	// AcceptTimeout bounds the wait for QEMU's connections. Default 30 s.
	AcceptTimeout time.Duration
	// OnStatus, if not nil, receives every query-migrate the driver makes
	// (every 50 ms, from Perform until Confirm, to notice a failure of
	// QEMU's own).
	OnStatus func(MigrationInfo)
}

// Source is the migrate.SourceDriver of a running QEMU: the guest's memory
// and device state flow from its migration socket through the tunnel.
type Source struct {
	qmp  *Client
	opts SourceOptions

	chans channels

	mu         sync.Mutex
	ln         net.Listener
	stopStatus func()
	last       MigrationInfo
	running    bool // the guest ran when the migration started
}

// sourceCookie is what Begin tells the destination.
type sourceCookie struct {
	QEMU     string `json:"qemu"`
	RAM      int64  `json:"ram"`
	Channels int    `json:"channels"`
}

// CookieRAM returns the guest RAM size, in bytes, that a Source's Begin
// cookie announces: a destination that starts its QEMU in Prepare sizes it
// from this.
func CookieRAM(beginCookie []byte) (int64, error) {
	var sc sourceCookie
	if err := json.Unmarshal(beginCookie, &sc); err != nil {
		return 0, fmt.Errorf("qemu: the source's cookie: %w", err)
	}
	if sc.RAM <= 0 {
		return 0, fmt.Errorf("qemu: the source's cookie announces %d bytes of RAM", sc.RAM)
	}
	return sc.RAM, nil
}

// NewSource returns the driver of the QEMU behind qmp.
func NewSource(qmp *Client, opts SourceOptions) *Source {
	if opts.MaxBandwidth <= 0 {
		opts.MaxBandwidth = 100 << 30
	}
	if opts.AcceptTimeout <= 0 {
		opts.AcceptTimeout = 30 * time.Second
	}
	return &Source{qmp: qmp, opts: opts}
}

// Begin sets QEMU's migration parameters and plans one stream for the main
// channel plus one per multifd channel.
func (s *Source) Begin(ctx context.Context) (migrate.Plan, error) {
	if s.opts.Dir == "" {
		return migrate.Plan{}, errors.New("qemu: SourceOptions.Dir is required")
	}
	if s.opts.Channels < 0 || s.opts.Channels > 63 {
		return migrate.Plan{}, fmt.Errorf("qemu: %d multifd channels: at most 63", s.opts.Channels)
	}
	ram, err := s.qmp.RAMSize(ctx)
	if err != nil {
		return migrate.Plan{}, err
	}
	if err := s.qmp.setMigrationParams(ctx, s.opts.Channels, s.opts.MaxBandwidth); err != nil {
		return migrate.Plan{}, err
	}
	cookie, _ := json.Marshal(sourceCookie{QEMU: s.qmp.Version.String(), RAM: ram, Channels: s.opts.Channels})
	plan := migrate.Plan{Cookie: cookie, Streams: []migrate.StreamInfo{{Name: "main"}}}
	if s.opts.Channels == 0 {
		plan.Streams[0].Size = ram // the RAM plus a little device state
	}
	for i := range s.opts.Channels {
		plan.Streams = append(plan.Streams, migrate.StreamInfo{Name: fmt.Sprintf("multifd-%d", i)})
	}
	return plan, nil
}

// Perform has QEMU migrate to a unix socket and returns its connections:
// the main channel (QEMU's first connection), then the multifd channels.
func (s *Source) Perform(ctx context.Context, cookie []byte) ([]io.Reader, error) {
	path := filepath.Join(s.opts.Dir, "migrate-src.sock")
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	st, err := s.qmp.QueryStatus(ctx)
	if err != nil {
		return nil, err
	}
	s.running = st == "running"
	if err := s.qmp.Execute(ctx, "migrate", map[string]any{"uri": "unix:" + path}, nil); err != nil {
		return nil, err
	}
	stopStatus := s.qmp.watch(&s.chans, s.onStatus)
	s.mu.Lock()
	s.stopStatus = stopStatus
	s.mu.Unlock()

	actx, cancel := context.WithTimeout(ctx, s.opts.AcceptTimeout)
	defer cancel()
	stop := context.AfterFunc(actx, func() { _ = ln.Close() })
	defer stop()
	readers := make([]io.Reader, 0, 1+s.opts.Channels)
	for range 1 + s.opts.Channels {
		c, err := ln.Accept()
		if err != nil {
			if actx.Err() != nil {
				err = fmt.Errorf("waiting for QEMU's %d connections: %w", 1+s.opts.Channels, actx.Err())
			}
			return nil, fmt.Errorf("qemu: %w", err)
		}
		readers = append(readers, s.chans.add(c))
	}
	return readers, nil
}

func (s *Source) onStatus(mi MigrationInfo) {
	s.mu.Lock()
	s.last = mi
	fn := s.opts.OnStatus
	s.mu.Unlock()
	if fn != nil {
		fn(mi)
	}
}

// Status returns the last query-migrate the driver saw.
func (s *Source) Status() MigrationInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// WasRunning reports whether the guest was running when Perform started
// the migration (a live migration).
func (s *Source) WasRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Confirm ends the migration in QEMU: on success the source must have
// completed it (the guest stays paused here; quit QEMU when done); on
// failure the migration is cancelled and the guest resumed.
func (s *Source) Confirm(ctx context.Context, cookie []byte, failed error) error {
	s.mu.Lock()
	stopStatus, ln := s.stopStatus, s.ln
	s.mu.Unlock()
	if stopStatus != nil {
		stopStatus()
	}
	if ln != nil {
		_ = ln.Close()
	}
	s.chans.closeAll()
	if failed == nil {
		mi, err := s.qmp.waitMigration(ctx, 10*time.Millisecond)
		s.onStatus(mi)
		return err
	}
	_ = s.qmp.Execute(ctx, "migrate_cancel", nil, nil)
	if _, err := s.qmp.waitMigration(ctx, 10*time.Millisecond); err == nil {
		// QEMU completed although the destination failed: the guest is
		// paused in postmigrate; it must run here.
		_ = s.qmp.Execute(ctx, "cont", nil, nil)
	}
	if st, err := s.qmp.QueryStatus(ctx); err == nil && st != "running" && s.running {
		if err := s.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("resuming the guest (%s): %w", st, err)
		}
	}
	return nil
}
