package rpc

import (
	"log/slog"
	"math"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

// Negotiation is the policy for virtrpc's native mode.
type Negotiation int

const (
	// AcceptCompat (the default) tries native mode and runs in libvirt
	// compat mode if the peer does not speak it. Conn.Mode tells which.
	AcceptCompat Negotiation = iota
	// RequireNative fails the connection up front, with ErrNativeRefused,
	// when the peer does not speak native mode: no silent fallback.
	RequireNative
	// CompatOnly never offers native mode (talk to libvirt as libvirt does).
	// A server with CompatOnly refuses HELLO as libvirtd would.
	CompatOnly
)

// Mode is what a connection runs.
type Mode int32

const (
	// ModeCompat: libvirt's protocol; no stream credit (memory is bounded
	// by pausing reads, which stalls the whole connection while a stream's
	// consumer is behind), only the server sends MESSAGE frames.
	ModeCompat Mode = iota
	// ModeNative: virtrpc peers with per-stream flow control, larger
	// frames, and calls and messages in both directions.
	ModeNative
)

func (m Mode) String() string {
	if m == ModeNative {
		return "native"
	}
	return "compat"
}

// AuthGate holds back every call but the listed procedures (and the
// keepalive and control programs) until Conn.Authenticate is called, usually
// by the handler of the last authentication step. Other calls get the error
// reply "authentication required", as libvirtd sends.
type AuthGate struct {
	Procedures []Procedure
}

// Options configure a connection. The zero value (or nil) means the
// documented defaults. Socket options are not set here: the transport
// package's dialers and listeners tune TCP (TCP_NOTSENT_LOWAT, so a small
// call does not wait behind bulk data in the kernel; TCP_NODELAY), and
// transport.Tune tunes a connection made elsewhere.
type Options struct {
	// Handlers serves the peer's calls and messages. Nil serves none: every
	// call gets an "unknown procedure" error reply.
	Handlers *Mux
	// Negotiation: default AcceptCompat.
	Negotiation Negotiation
	// Auth gates dispatch until the connection is authenticated; nil means
	// it is authenticated from the start.
	Auth *AuthGate
	// MaxConcurrentCalls bounds the peer's calls served at once; more get
	// an error reply. In native mode the peer learns it and waits instead.
	// Default 256.
	MaxConcurrentCalls int
	// KeepaliveInterval: a PING is sent after this long without receiving
	// anything; the peer is declared dead after interval × (count + 1).
	// Default 5s (libvirt's); negative disables sending pings (pings from
	// the peer are always answered).
	KeepaliveInterval time.Duration
	// KeepaliveCount: default 5.
	KeepaliveCount int
	// StreamWindow is each stream's initial and smallest receive window in
	// native mode: bytes in flight toward it. Windows grow from it toward
	// bandwidth × RTT as the connection measures the link. Default 1 MiB;
	// at least 64 KiB.
	StreamWindow int
	// StreamBuffer bounds what a stream holds for a slow reader: data in
	// flight plus received and not yet read, at least four windows.
	// Default 4 MiB.
	StreamBuffer int
	// MaxStreamWindow caps a stream's auto-tuned window. Default 16 MiB.
	MaxStreamWindow int
	// ConnectionWindow bounds the growth of all streams' windows together.
	// Default 64 MiB.
	ConnectionWindow int
	// ChunkSize is the data payload of a stream frame this side sends.
	// Default 65508 (a 64 KiB frame: whole TLS records). Toward a libvirt
	// peer it is at most 262120.
	ChunkSize int
	// MaxMessage bounds a received message (header plus payload).
	// Default 32 MiB, libvirt's limit.
	MaxMessage int
	// MaxStreams bounds the streams open at once on the connection, in
	// both directions together: OpenStream beyond it fails with
	// ErrTooManyStreams, and so does a handler's Request.Stream (the peer's
	// call is then refused). Default 1024.
	MaxStreams int
	// MaxUnauthMessage bounds a received message while the auth gate
	// (Auth) is closed: an anonymous peer cannot make us read a large body.
	// Default 512 KiB, room for libvirt's largest SASL step (64 KiB of XDR
	// chars, 4 wire bytes each). Bigger messages close the connection.
	MaxUnauthMessage int
	// ConnectionMemory bounds what a peer can make this connection hold:
	// message bodies being read (charged as they arrive), call payloads
	// while their handler runs, replies and messages waiting to be sent,
	// messages waiting for their handler. A call whose payload does not fit
	// is discarded and gets an error reply; a reply that does not fit is
	// replaced by an error reply; a message (or reply to our call) that
	// does not fit, or an error reply that cannot be queued (the last
	// 16 KiB are kept for error replies), closes the connection; all with
	// ErrMemoryBudget's text. A message being written counts until it is
	// written, so a peer that reads nothing holds at most this much of its
	// replies. At least 128 KiB; default 128 MiB: four
	// libvirt-size messages, so a 32 MiB call can be read while another is
	// served and its reply queued. Each receiving stream charges its
	// initial buffer (StreamWindow in native mode, CompatStreamBuffer in
	// compat) while open; opening one that does not fit fails (the peer's
	// call gets the error reply). Window growth is bounded apart
	// (StreamBuffer, MaxStreamWindow, ConnectionWindow).
	ConnectionMemory int
	// ServerMemory bounds what all connections of one Serve hold together:
	// each connection's ConnectionMemory use beyond its first 64 KiB, plus
	// 192 KiB per connection (what an idle one holds, its buffers and
	// goroutine stacks, and those 64 KiB, so a small call always fits),
	// paid as it is accepted: at most 5461 connections
	// per GiB. A connection that does not fit is closed at once; beyond
	// it, calls fail as over ConnectionMemory (error replies may exceed it
	// by up to 16 KiB per connection, so a refused call is still told).
	// Default 1 GiB, about eight connections' worth of 32 MiB messages at
	// once. Serve only.
	ServerMemory int
	// MaxConnections caps the connections one Serve serves at once, TLS
	// handshakes included; one more is closed as soon as it is accepted
	// (accepting goes on, so the listen queue never fills behind an
	// attacker). Default 5000, libvirtd's max_clients. Serve only.
	MaxConnections int
	// MaxUnauthenticated caps the connections whose auth gate (Auth) is
	// still closed; one more is closed at once. Default 20, libvirtd's
	// max_anonymous_clients. Without Auth, connections start
	// authenticated and only MaxConnections applies. Serve only.
	MaxUnauthenticated int
	// AuthTimeout closes a connection still unauthenticated this long
	// after it started (after its TLS handshake), with ErrAuthTimeout.
	// Default 60 s (a person may be typing a SASL password); negative
	// disables. Serve only.
	AuthTimeout time.Duration
	// MessageTimeout and MinMessageRate reap a peer that stops or crawls in
	// the middle of a message (keepalive cannot: the read loop is busy
	// reading it). Within every MessageTimeout, a message being received
	// must advance by MinMessageRate × MessageTimeout bytes or reach its
	// end, else the connection closes with ErrSlowPeer. Defaults 30 s
	// (libvirt's keepalive deadline) and 64 KiB/s: a 32 MiB message
	// crosses a 512 kbit/s link in time. The same bounds our replies
	// toward a peer that reads nothing (but sends, so keepalive holds it
	// alive): a write of n bytes of replies that makes no progress for
	// MessageTimeout + n/MinMessageRate closes the connection with
	// ErrPeerNotReading, and so (on Linux, where the socket's send queue
	// can be read) do replies already handed to the kernel of which the
	// peer takes nothing for MessageTimeout + 64 KiB/MinMessageRate, unless
	// a stream is open. A message whose bytes wait in our socket's receive
	// queue is ours to be late with, not the peer's. A negative
	// MessageTimeout disables both. Silence between messages is
	// keepalive's to reap.
	MessageTimeout time.Duration
	MinMessageRate int
	// CompatStreamBuffer is how many bytes a stream buffers in compat mode
	// before the read loop pauses. Default 4 MiB.
	CompatStreamBuffer int
	// HandshakeTimeout bounds the TLS handshake of each connection Serve
	// accepts (Accept takes a ctx instead). Default 10s.
	HandshakeTimeout time.Duration
	// Logger receives debug and error logs; nil is silent.
	Logger *slog.Logger
}

type config struct {
	Options
	log *slog.Logger
}

func resolve(o *Options) config {
	var c config
	if o != nil {
		c.Options = *o
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxConcurrentCalls, 256)
	def(&c.KeepaliveCount, 5)
	def(&c.StreamWindow, 1<<20)
	def(&c.MaxStreamWindow, 16<<20)
	def(&c.StreamBuffer, 4<<20)
	def(&c.ConnectionWindow, 64<<20)
	def(&c.ChunkSize, frame.AlignedStreamPayload)
	def(&c.MaxMessage, frame.MaxMessage)
	def(&c.CompatStreamBuffer, 4<<20)
	def(&c.MaxStreams, 1024)
	def(&c.MaxUnauthMessage, 512<<10)
	def(&c.ConnectionMemory, 128<<20)
	c.ConnectionMemory = max(c.ConnectionMemory, 128<<10) // room for a small call and the error headroom
	def(&c.ServerMemory, 1<<30)
	def(&c.MaxConnections, 5000)
	def(&c.MaxUnauthenticated, 20)
	if c.AuthTimeout == 0 {
		c.AuthTimeout = time.Minute
	}
	def(&c.MinMessageRate, 64<<10)
	if c.MessageTimeout == 0 {
		c.MessageTimeout = 30 * time.Second
	}
	// At least what a peer's HELLO must announce, at most what it can (a
	// 32-bit field: a larger window would be announced truncated and stall).
	c.StreamWindow = int(min(int64(max(c.StreamWindow, minPeerWindow)), math.MaxUint32))
	c.MaxStreamWindow = max(c.MaxStreamWindow, c.StreamWindow)
	c.ChunkSize = min(c.ChunkSize, c.MaxMessage-frame.HeaderSize)
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = 5 * time.Second
	}
	c.log = c.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}
