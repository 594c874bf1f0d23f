// Package frame is the wire layer of virtrpc: the message header, types,
// statuses and limits of libvirt's RPC protocol, a framer that reads and
// writes one message at a time ([Reader], [Writer]), the [Encoder] that lays
// out and sizes every message the library sends (a Writer uses it, and so
// does package rpc, which queues messages instead of writing them), the
// libvirt error
// payload ([Error]), stream holes, and virtrpc's own control program (HELLO
// and stream credit). Package [github.com/virtrpc/virtrpc/frame/xdr] encodes
// payloads.
//
// # Messages
//
// Every message is a 4-byte big-endian length word that counts itself,
// a 24-byte XDR header, then the payload:
//
//	offset  size  field    XDR type      meaning
//	     0     4  length   unsigned int  whole message, length word included
//	     4     4  prog     unsigned int  program (libvirt remote 0x20008086)
//	     8     4  vers     unsigned int  program version
//	    12     4  proc     int           procedure number
//	    16     4  type     enum          see Type
//	    20     4  serial   unsigned int  see below
//	    24     4  status   enum          see Status
//	    28     -  payload  XDR           length - 28 bytes
//
// Types: CALL=0, REPLY=1, MESSAGE=2, STREAM=3, CALL_WITH_FDS=4,
// REPLY_WITH_FDS=5, STREAM_HOLE=6. Statuses: OK=0, ERROR=1, CONTINUE=2.
//
// A CALL's serial is chosen by the caller, increasing; a REPLY and the STREAM
// frames of a stream repeat the prog, vers, proc and serial of their CALL;
// libvirt sends MESSAGE frames (events, keepalive) with serials unrelated to
// the client's. On a virtrpc connection with the "bidi" feature, calls
// started by the accepting side have the top bit of the serial set
// ([ServerSerialBit]), so the two sides' serials, and therefore their
// streams, never collide.
//
// Limits: the length word is at least 28 ([MinLen], an empty payload) and the
// message without it, header plus payload, is at most 32 MiB ([MaxMessage]).
// [Reader] checks the length before it allocates anything and reports a bad
// one as a [*ProtocolError] wrapping [ErrFrameTooSmall] or [ErrFrameTooLarge];
// both bounds are configurable with [ReaderOptions]. Any framing error is
// final: the byte stream cannot be resynchronised and the connection must be
// closed. A stream data payload toward a libvirt peer is at most 262120 bytes
// ([MaxCompatStreamPayload]): 256 KiB of header plus payload, a 262148-byte
// frame.
//
// # Error payload
//
// A REPLY or STREAM with status ERROR carries libvirt's virNetMessageError,
// decoded into [Error] (usable with errors.As). "optional" is an XDR bool
// (0 or 1) followed by the value when it is 1:
//
//	int              code
//	int              domain
//	optional string  message
//	int              level
//	optional         dom {string name; opaque uuid[16]; int id}
//	optional string  str1
//	optional string  str2
//	optional string  str3
//	int              int1
//	int              int2
//	optional         net {string name; opaque uuid[16]}
//
// For example libvirt's unknown-domain error is code 42, domain 12, message
// "Domain not found", level 2, str1 "Domain not found", int1 and int2 -1.
//
// # Streams
//
// A stream is identified by the (prog, vers, proc, serial) of the CALL that
// opened it. libvirt's rules, which virtrpc follows exactly in compat mode:
//
//   - Data: STREAM/CONTINUE frames with the raw bytes as payload, sent
//     without waiting for any reply.
//   - Finish: the sender sends STREAM/OK with an empty payload; the receiver
//     answers STREAM/OK once it has consumed everything, or STREAM/ERROR with
//     its error.
//   - End of a server-to-client stream: libvirtd first sends an empty
//     STREAM/CONTINUE as the end-of-data marker; the client then sends
//     STREAM/OK and the server answers STREAM/OK. So an empty CONTINUE is
//     never data.
//   - Abort: STREAM/ERROR (a client abort has an empty payload and is
//     acknowledged with STREAM/OK); a receiver that fails mid-stream sends
//     STREAM/ERROR with the error payload (libvirtd precedes it with an empty
//     CONTINUE).
//   - Holes, on streams opened as sparse: STREAM_HOLE with status CONTINUE and
//     the 12-byte payload {hyper length; unsigned int flags} ([PutHole],
//     [ParseHole]), standing for length zero bytes.
//   - Frames that arrive for a stream already closed are dropped, not fatal.
//
// In native mode (below) one rule differs: the receiver's STREAM/OK that
// answers a finish carries an unsigned hyper, the data bytes it consumed
// ([PutVerdict], [ParseVerdict]); the sender's Close fails unless that is
// every byte it sent. The finish keeps its empty payload, so when a
// receiver closes before any data arrived (finishing an empty stream of
// its own) while the peer sends, neither side takes the other's finish for
// a verdict, and the sender learns its data was not read.
//
// # Keepalive
//
// libvirt's keepalive program is 0x6b656570 ("keep"), version 1, with PING=1
// and PONG=2, sent as MESSAGE frames with serial 0, status OK and an empty
// payload: every keepalive frame is exactly 28 bytes. Any message received
// counts as a sign of life.
//
// # The control program
//
// virtrpc's own program is 0x76727063 ("vrpc"), version 1 ([ControlProgram],
// [ControlVersion]). Only peers that agreed on it with HELLO use it:
//
//   - HELLO (proc 1, CALL): the first call on a connection. Its argument is
//     the caller's [Hello] (version, features, largest stream payload,
//     initial stream window, concurrent calls); the reply is the callee's
//     Hello whose Features are the ones both sides have. A libvirt peer
//     answers the unknown program with an error, and the connection runs in
//     compat mode: plain libvirt behaviour, nothing else of this program is
//     ever sent.
//   - CREDIT (proc 2, MESSAGE): the serial is the serial of the stream being
//     credited and the payload an unsigned hyper of bytes granted
//     ([PutCredit], [ParseCredit]). The sender of each new stream starts
//     with the receiving peer's Hello.InitialWindow of credit and never has
//     more than its credit in flight; the receiver grants more as it
//     consumes. Sending past the credit is a protocol error that closes the
//     connection.
//
// # Authentication
//
// Both modes authenticate with libvirt's own procedures of the remote
// program (0x20008086 v1): AUTH_LIST 66, AUTH_SASL_INIT 67, AUTH_SASL_START
// 68, AUTH_SASL_STEP 69, whose SASL data are XDR char arrays (four wire
// bytes per byte) with an int nil that tells "no data" from empty data.
// In native mode they run after HELLO, on the same procedures: the control
// program has no authentication of its own. Package
// [github.com/virtrpc/virtrpc/transport/sasl] speaks them.
//
// Features: "flow-control" (credit as above), "large-frames" (stream data
// payloads up to Hello.MaxStreamPayload instead of 262120 bytes) and "bidi"
// (either side may send calls and MESSAGE frames).
//
// # Streams: directions, verdicts and abort codes
//
// Both sides declare a stream's direction when it is opened (upload,
// download, duplex); it is not on the wire. Data, a hole or (in native
// mode) a finish arriving toward a side that does not receive is a protocol
// error that closes the connection. In native mode each direction of a
// stream ends on its own: its sender's finish is STREAM/OK with an empty
// payload, and its receiver answers STREAM/OK with an 8-byte verdict
// ([PutVerdict]: the bytes it consumed) or STREAM/ERROR; a duplex stream
// carries both exchanges, told apart by the payload length, each way with
// its own credit. In compat mode libvirt's rules hold: the client's
// STREAM/OK finishes the whole stream and the server answers it with
// STREAM/OK; the server's end of data is an empty STREAM/CONTINUE.
//
// An abort is STREAM/ERROR with the error payload. Reasons virtrpc itself
// defines use the error domain [DomainVirtrpc] (0x7672) with codes
// [CodeStreamAbandoned] (1), [CodeReceiverClosed] (2), [CodePeerFinished]
// (3), [CodeStreamIncomplete] (4) and [CodeEarlyStreamData] (5); the
// receiving side maps them back to the matching sentinel errors. The error
// reply to a stream-opening call that the peer refused for its MaxStreams
// carries [CodeTooManyStreams] (6) in the same domain. Any other
// reason is sent as code 78 (operation aborted) in libvirt's stream domain
// (54), or as the *Error the user gave.
package frame
