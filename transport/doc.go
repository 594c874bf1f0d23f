// Package transport dials and listens for the connections virtrpc runs on:
// TCP, unix sockets and TLS over either, with libvirt's conventions. Every
// function hands back a plain [net.Conn] for rpc.Client or rpc.Accept; the
// rpc package neither imports this one nor touches socket options, so the
// tuning below is this package's alone.
//
// # Conventions
//
// Blocking calls take a context first; it bounds connecting and handshaking,
// never the lifetime of what is returned. Options are pointers to structs
// whose nil and zero values mean the defaults their fields document. Errors
// wrap their causes with %w, so errors.Is and errors.As see [net.ErrClosed],
// [os.ErrDeadlineExceeded], [context.DeadlineExceeded], [context.Canceled],
// [io/fs.ErrNotExist], syscall errnos and *net.OpError. Errors from a
// listener's Accept are the only exception: they are returned unwrapped,
// as callers of net.Listener expect.
//
// # TCP tuning
//
// One connection carries both small RPC calls and bulk data streams. For a
// small call not to queue behind megabytes of bulk data, little may sit
// unsent in the sender's socket: [DialTCP], [ListenTCP] and the TLS
// functions set TCP_NOTSENT_LOWAT to [DefaultNotSentLowat] (32 KiB, which
// costs no throughput) and TCP_NODELAY. Socket buffer sizes are left to the
// kernel on purpose: shrinking them costs throughput. [Tune] applies the
// same settings to a connection obtained elsewhere, including through a
// *tls.Conn: a connection from net.Dial runs without TCP_NOTSENT_LOWAT, and
// then a small call can wait behind as much bulk data as the kernel's send
// buffer holds.
//
// # TLS
//
// TLS 1.3 is the minimum unless a config sets MinVersion.
// [LoadLibvirtServerConfig] and [LoadLibvirtClientConfig] read libvirt's
// PKI files, with the client certificate required and verified as libvirtd
// does. [TLSOptions].AllowedDNs narrows the clients a listener accepts to
// subject DNs matching libvirt-style patterns (tls_allowed_dn_list, '*' and
// '?', over the DN as libvirtd writes it, see [DN]: "O=virtrpc,CN=*"); a
// refused client's handshake fails with a [*DNError] that names the DN. `go run ./examples/pki -dir DIR` makes a PKI in libvirt's layout.
//
// After the TLS handshake a libvirt server checks the client certificate
// and, if it accepts the client, sends one byte, 0x01; anything else, or
// the connection closing, means refusal. With [TLSOptions].LibvirtAck,
// [DialTLS] waits for that byte and reports a refusal as an error matching
// [ErrLibvirtRefused]. This matters more than it seems: in TLS 1.3 the
// client's handshake completes before the server has judged the client
// certificate, so without the byte a rejected client would only learn of it
// on its first read.
//
// # Serving TLS
//
// A listener from [ListenTLS] never handshakes inside Accept, since that
// would let one slow or silent client stall every other. Accept returns at
// once with a *tls.Conn, or with LibvirtAck a *[LibvirtServerConn] that
// sends the acknowledgement byte right after its handshake by itself, so a
// server cannot forget it. The handshake runs on the first Read or Write;
// rpc.Serve and rpc.Accept run it first, bounded, in the goroutine serving
// the connection. A server of its own calls [Handshake] with a context
// there:
//
//	for {
//		c, err := ln.Accept()
//		if err != nil {
//			return err
//		}
//		go func() {
//			defer c.Close()
//			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
//			defer cancel()
//			if err := transport.Handshake(ctx, c); err != nil {
//				log.Print(err)
//				return
//			}
//			serve(c)
//		}()
//	}
//
// Handshake is a no-op for plain TCP and unix connections, so this loop
// serves every transport. A server with its own tls.Conn (from
// tls.NewListener, say) calls [AcceptLibvirtTLS] instead.
package transport
