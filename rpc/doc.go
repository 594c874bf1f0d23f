// Package rpc is a virtrpc connection: calls, replies, one-way messages,
// keepalive and data streams over one net.Conn, in libvirt's wire format.
//
// Either side calls and either side serves. The dialing side starts a
// connection with Client, which negotiates native mode with a HELLO call;
// the accepting side uses Accept (which returns once the peer's first call
// settled the mode), Server (which returns at once; Negotiated tells when
// the mode is settled), or Serve for a whole listener. Handlers are
// registered on a Mux per (program, version, procedure).
//
// # Modes
//
// Two virtrpc peers run in native mode: per-stream credit flow control,
// larger frames, calls and messages in both directions. A libvirt peer
// answers HELLO with an error and the connection runs libvirt's own protocol
// (compat mode), unless Options.Negotiation is RequireNative, which fails
// the connection up front with ErrNativeRefused. In compat mode a stream has
// no credit: when its reader falls behind, the read loop pauses, which stalls
// every call and stream of the connection until the reader catches up
// (libvirt behaves the same way).
//
// # Streams
//
// A call opens a stream: OpenStream on the calling side, Request.Stream in
// the handler. Frames the handler writes wait for the reply, so a handler
// either returns and lets a goroutine move the data, or calls Request.Reply
// first. See package stream for the stream's own API.
//
// # Scheduling
//
// One read loop and one write scheduler per connection. The read loop never
// waits for user code (handlers run on their own goroutines, messages on a
// per-connection queue) except behind a compat-mode stream as said above.
// The scheduler sends control frames first, then calls, replies and
// messages, then stream data one frame per stream in round-robin, so a small
// call waits for at most one data frame. When the socket is idle, the
// goroutine that queues a frame writes it itself, unless it has a ctx that
// can end: then the writer goroutine writes it, so that the caller can
// return when its ctx ends even if the peer reads nothing.
//
// # Limits
//
// What a peer can make a connection hold is bounded: every buffer it can
// fill (a message body being read, a call's payload while served, replies
// and messages waiting to be written or handled) draws on
// Options.ConnectionMemory and, under Serve, on Options.ServerMemory; a
// call over the budget fails with an error reply, a message over it closes
// the connection (ErrMemoryBudget). A peer that crawls mid-message
// (ErrSlowPeer) or leaves its replies unread (ErrPeerNotReading) past
// Options.MessageTimeout is closed; before authentication a message is at
// most Options.MaxUnauthMessage. Serve caps its connections
// (MaxConnections), its unauthenticated ones (MaxUnauthenticated) and the
// time to authenticate (AuthTimeout, ErrAuthTimeout), closing one over a
// cap as soon as it is accepted.
//
// # Closing
//
// Close is prompt and may be called from any goroutine, handlers included;
// it does not wait for handlers. Shutdown drains calls and streams first,
// bounded by its ctx.
//
// # Errors
//
// A failure reported by the peer is a *Error (libvirt's error payload). A
// closed connection fails every waiter with a *ClosedError, which matches
// net.ErrClosed and its cause (ErrKeepaliveTimeout, a *ProtocolError,
// ErrPeerClosed, ...) with errors.Is and errors.As.
package rpc
