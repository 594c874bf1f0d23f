// Package migrate is virtrpc's live-migration helper: the phases of
// libvirt's v3 migration protocol over one rpc.Conn, with any number of
// data streams in one migration (QEMU's main migration channel, its multifd
// channels, disk images with their holes kept), progress, a bandwidth
// limit that can change while the data moves, and cancellation from either
// side.
//
// The helper moves bytes and sequences the phases; what a phase does on a
// host is the caller's, through a SourceDriver and a DestinationDriver
// (package migrate/qemu drives QEMU with them). Cookies are opaque bytes the
// drivers fill, as libvirt's are.
//
//   - Begin (source): SourceDriver.Begin returns the Plan: a cookie and
//     the streams (name, expected size, sparse or not).
//   - Prepare (destination): DestinationDriver.Prepare gets the source's
//     cookie and streams, returns its cookie and one io.Writer per stream;
//     the source then opens the tunnel streams, one call each.
//   - Perform (source): SourceDriver.Perform gets the destination's cookie
//     and returns one io.Reader per stream; the helper pumps each reader
//     into its stream (sparse files keep their holes) under the bandwidth
//     limit, and the destination writes each stream to its writer.
//   - Finish (destination): once every stream has ended and the bytes
//     counted on both sides agree, DestinationDriver.Finish takes the guest
//     over and returns a cookie. When the migration fails in any phase,
//     Finish is called instead with the failure, to clean up.
//   - Confirm (source): SourceDriver.Confirm learns the outcome (stop the
//     guest for good, or resume it); the destination hears the result.
//
// On the source, an Outgoing runs the phases (Outgoing.Run) over a
// connection to the destination; on the destination, a Receiver serves
// them on an rpc.Mux (Receiver.Register) for any number of migrations.
//
// # Failures and cancellation
//
// Every failure is an *Error naming the phase, the side it happened on, and
// why, on both hosts: a failure on one side reaches the other with its
// phase, side and reason. The first failure is the one reported; what it
// causes is not. Cancelling Run's ctx cancels the migration from the
// source; Receiver.Cancel cancels it from the destination. Either way the
// streams are aborted at once, so the other host learns it in
// milliseconds, not at its next call; a destination failure also reaches
// the source through a pending WATCH call while its readers block. A lost
// connection fails the migration on both sides.
//
// # A destination on the network
//
// What a source announces is bounded before anything is kept (64 streams,
// 1 MiB cookies, sizes that sum to at most 2^60 bytes), a Receiver holds at
// most ReceiverOptions.MaxIncoming migrations at once, only the connection
// that prepared a migration may drive it, calls out of order fail the
// migration, and a source that goes silent on a live connection for
// ReceiverOptions.IdleTimeout fails it (the driver's Finish cleans up).
//
// # Progress and bandwidth
//
// Progress (Outgoing.Progress, Incoming.Progress, or the OnProgress
// callbacks) counts data bytes per stream and in total, with the rate over
// the last second and the time remaining when the sizes are known, on the
// helper's own monotonic clock. The bandwidth limit (OutgoingOptions.Limit,
// Outgoing.SetLimit) is a token bucket that the source's pumps draw from
// before handing bytes to the streams: all streams together move at most
// the limit, and a new limit applies at once.
//
// # The migration program
//
// The procedures live on program 0x4d494752 ("MIGR"), version 3 (libvirt's
// v3 migration), which no libvirt program uses. The source calls, the
// destination serves:
//
//	1 PREPARE  {id, cookie, streams<{name, size, sparse}>} → {cookie}
//	2 TUNNEL   {id, index} → {}, opens stream index (the source sends)
//	3 WATCH    {id} → {} once the migration is over here, or its failure
//	4 FINISH   {id, sent<hyper>, cookie} → {cookie}
//	5 CONFIRM  {id, failure *} → {} (the source's Confirm outcome)
//	6 ABORT    {id, failure *} → {} (the source failed or cancelled)
//
// Failures cross the wire as libvirt's error payload: code 9
// (VIR_ERR_OPERATION_FAILED), the message as printed, str1 the phase, str2
// the side, str3 the reason, int1 the program number.
package migrate
