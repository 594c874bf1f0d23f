package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"time"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// The two-process mode: -listen runs only the destination host, -connect
// only the source host, on one machine or two. With -transport tls both
// read their certificates from -pki DIR in libvirt's layout; the
// destination writes a throwaway PKI there first if DIR has none (copy DIR
// to the source host). Other transports: transports.go.

// runDestination serves one incoming migration on cfg.listen and returns
// its outcome.
func runDestination(ctx context.Context, cfg config, stdout io.Writer) error {
	cr, err := destinationCreds(cfg, stdout)
	if err != nil {
		return err
	}
	var dstDrv migrate.DestinationDriver = &memDestination{tamper: cfg.tamper}
	var qdst *qemuDestination
	if cfg.qemu {
		if err := requireQEMUBinary(); err != nil {
			return err
		}
		qdst = &qemuDestination{out: stdout, corruptRAM: cfg.corruptRAM}
		defer qdst.stop() // after the receiver's cleanup: registered first
		dstDrv = qdst
	}
	l, err := cr.listen(ctx, cfg.listen)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	rcv := migrate.NewReceiver(dstDrv, &migrate.ReceiverOptions{
		// One migration: the drivers hold one guest, and a second
		// Prepare (another peer's) broke the first one's or ended this
		// process with its own failure.
		MaxIncoming: 1,
		OnDone: func(in *migrate.Incoming, err error) {
			select {
			case done <- err:
			default:
			}
		},
	})
	opts := &rpc.Options{Handlers: destinationMux(rcv)}
	cr.serve(opts, opts.Handlers)
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
	fmt.Fprintf(stdout, "destination listening on %s (%s)\n", l.Addr(), cr.describe(cfg))
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

// runSource migrates the guest to the destination at cfg.connect.
func runSource(ctx context.Context, cfg config, stdout, progressW io.Writer) error {
	cr, err := sourceCreds(cfg)
	if err != nil {
		return err
	}
	conn, err := connectSource(ctx, cfg, cr, cfg.connect, stdout)
	if err != nil {
		return err
	}
	defer conn.Close()
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
	fmt.Fprintf(stdout, "verified: %d bytes, %.0f MB/s through virtrpc over %s to another process (no plain %s baseline across processes)\n",
		res.bytes, mbps(res.bytes, res.dur), transportName(cfg.transport), transportName(cfg.transport))
	return nil
}

// connectSource connects the source to the destination at addr,
// authenticates as the transport demands and says so on stdout.
func connectSource(ctx context.Context, cfg config, cr *creds, addr string, stdout io.Writer) (*rpc.Conn, error) {
	nc, err := cr.dial(ctx, cfg, addr)
	if err != nil {
		return nil, err
	}
	var opts rpc.Options
	if cfg.compat {
		opts.Negotiation = rpc.CompatOnly
	}
	conn, err := rpc.Client(ctx, nc, &opts)
	if err != nil {
		return nil, fmt.Errorf("connecting to the destination at %s: %w", addr, err)
	}
	how, err := cr.authenticate(ctx, conn)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	over := transportName(cr.kind)
	if tc, ok := nc.(*tls.Conn); ok {
		over = fmt.Sprintf("TLS 1.3 (%s)", tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
	}
	fmt.Fprintf(stdout, "source → destination %s over %s, %s, virtrpc %s mode\n", addr, over, how, conn.Mode())
	return conn, nil
}
