// Package qemu drives QEMU live migration through rpc/migrate: a small QMP
// client, QEMU processes started or attached to, and the drivers that make
// a source QEMU's migration stream (and its multifd channels) flow through
// the helper's tunnel into a destination QEMU.
//
// # Why a QMP client of our own
//
// github.com/digitalocean/go-qemu's qmp package serialises every command
// under one mutex without matching replies to commands by id (so a command
// whose caller gave up can hand its reply to the next one), delivers events
// on an unbuffered channel that blocks its reader when nobody receives
// (and with it every command's reply), takes no context, and its module
// pulls in go-libvirt. QMP is JSON lines over a unix socket; Client is
// about 250 lines: ids matched, events buffered, ctx on every command.
//
// Start runs a QEMU process (killed by PID with Process.Kill); to attach to
// a QEMU started by someone else, Dial its QMP socket: the drivers take a
// *Client either way.
//
// # Migrating QEMU through the tunnel
//
// On the source host, Source is a migrate.SourceDriver: its Perform has
// the source QEMU migrate to a unix socket that the helper listens on
// (QEMU opens one connection for the main channel, then one per multifd
// channel; each becomes a stream), after raising QEMU's max-bandwidth,
// whose 128 MiB/s default would cap the tunnel, and setting
// multifd-channels. On the destination host, Destination is a
// migrate.DestinationDriver for a QEMU started with -incoming defer: its
// Prepare issues migrate-incoming on a unix socket and connects to it once
// per stream (the main channel first, as QEMU 7.2 takes the first
// connection for it); its Finish waits for QEMU's incoming migration to
// complete and resumes the guest, or kills QEMU when the migration failed.
// Both report QEMU's own status (query-migrate) next to the tunnel's.
package qemu
