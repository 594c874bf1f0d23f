package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
	"github.com/virtrpc/virtrpc/transport"
)

// The two-process mode: -listen runs only the destination host, -connect
// only the source host, on one machine or two. Both read their certificates
// from -pki DIR in libvirt's layout; the destination writes a throwaway PKI
// there first if DIR has none (copy DIR to the source host).

// runDestination serves one incoming migration on cfg.listen and returns
// its outcome.
func runDestination(ctx context.Context, cfg config, stdout io.Writer) error {
	if cfg.pki == "" {
		return errors.New("-listen needs -pki DIR (a throwaway PKI is written there if DIR has none)")
	}
	var dstDrv migrate.DestinationDriver = &memDestination{tamper: cfg.tamper}
	var qdst *qemuDestination
	if cfg.qemu {
		if err := requireQEMUBinary(); err != nil {
			return err
		}
		qdst = &qemuDestination{out: stdout}
		defer qdst.stop() // after the receiver's cleanup: registered first
		dstDrv = qdst
	}
	if _, err := os.Stat(filepath.Join(cfg.pki, testcert.CACertFile)); errors.Is(err, os.ErrNotExist) {
		pki, err := testcert.New()
		if err != nil {
			return err
		}
		if err := pki.WriteLibvirtDir(cfg.pki); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote a throwaway PKI to %s: the source needs a copy of it\n", cfg.pki)
	}
	tlsCfg, err := transport.LoadLibvirtServerConfig(cfg.pki)
	if err != nil {
		return err
	}
	l, err := transport.ListenTLS(ctx, "tcp", cfg.listen, &transport.TLSOptions{Config: tlsCfg})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	rcv := migrate.NewReceiver(dstDrv, &migrate.ReceiverOptions{
		OnDone: func(in *migrate.Incoming, err error) {
			select {
			case done <- err:
			default:
			}
		},
	})
	opts := &rpc.Options{Handlers: destinationMux(rcv)}
	if cfg.compat {
		opts.Negotiation = rpc.CompatOnly
	}
	serveCtx, stopServing := context.WithCancel(context.Background())
	served := make(chan struct{})
	conns := make(chan *rpc.Conn, 16)
	go func() {
		defer close(served)
		_ = rpc.Serve(serveCtx, l, opts, func(c *rpc.Conn) {
			select {
			case conns <- c:
			default:
			}
		})
	}()
	defer func() {
		// Let the source hang up first, so that it reads everything this
		// side said (a failure's reason above all) before the connection
		// goes.
		linger := time.After(3 * time.Second)
		for done := false; !done; {
			select {
			case c := <-conns:
				select {
				case <-c.Done():
				case <-linger:
					done = true
				}
			default:
				done = true
			}
		}
		stopServing()
		<-served
		_ = rcv.Close()
	}()
	fmt.Fprintf(stdout, "destination listening on %s (TLS, certificates in %s)\n", l.Addr(), cfg.pki)
	if cfg.ready != nil {
		cfg.ready(l.Addr().String())
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		// Tell the source before the connection goes: it reports the
		// cancel on the destination, in the phase it came in.
		if rcv.Cancel(guestName, fmt.Errorf("cancelled on the destination: %w", context.Cause(ctx))) {
			select {
			case err = <-done:
				return err
			case <-time.After(5 * time.Second):
			}
		}
		return fmt.Errorf("destination: %w", context.Cause(ctx))
	}
	if err != nil {
		return err
	}
	if qdst != nil {
		fmt.Fprintf(stdout, "destination: %s\n", qdst.verified())
	}
	fmt.Fprintf(stdout, "destination: %s migrated in and running here\n", guestName)
	return nil
}

// runSource migrates the synthetic guest to the destination at cfg.connect.
func runSource(ctx context.Context, cfg config, stdout, progressW io.Writer) error {
	if cfg.pki == "" {
		return errors.New("-connect needs -pki DIR, a copy of the destination's")
	}
	tlsCfg, err := transport.LoadLibvirtClientConfig(cfg.pki, testcert.ServerName)
	if err != nil {
		return err
	}
	tc, err := transport.DialTLS(ctx, "tcp", cfg.connect, &transport.TLSOptions{Config: tlsCfg})
	if err != nil {
		return err
	}
	var opts rpc.Options
	if cfg.compat {
		opts.Negotiation = rpc.CompatOnly
	}
	conn, err := rpc.Client(ctx, tc, &opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintf(stdout, "source → destination %s over TLS 1.3, virtrpc %s mode\n", cfg.connect, conn.Mode())
	var res *outcome
	if cfg.qemu {
		var g *sourceGuest
		if g, err = startSourceGuest(ctx, cfg, stdout); err != nil {
			return err
		}
		defer g.stop()
		res, err = migrateQEMU(ctx, cfg, conn, g, stdout, progressW)
	} else {
		res, err = migrateGuest(ctx, cfg, conn, stdout, progressW)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "verified: %d bytes, %.0f MB/s through virtrpc over TLS to another process (no plain TLS baseline across processes)\n",
		res.bytes, mbps(res.bytes, res.dur))
	return nil
}
