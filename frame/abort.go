package frame

// virtrpc's own error codes, in their own domain, so that a stream's abort
// reason survives the wire as a value: the receiving side maps them back to
// the sentinel errors of packages stream and rpc (errors.Is works on both
// ends). A libvirt peer shows them as an error of an unknown domain, with
// the message text.
const (
	// DomainVirtrpc is the error domain of virtrpc's own codes ("vr").
	DomainVirtrpc = 0x7672

	// CodeStreamAbandoned: the caller gave up on the call that opened the
	// stream (rpc.ErrStreamAbandoned).
	CodeStreamAbandoned = 1
	// CodeReceiverClosed: the receiver closed the stream before the end of
	// its data (stream.ErrReceiverClosed).
	CodeReceiverClosed = 2
	// CodePeerFinished: the peer finished without reading the data sent to
	// it (stream.ErrPeerFinished).
	CodePeerFinished = 3
	// CodeStreamIncomplete: the receiver consumed less than was sent
	// (stream.ErrIncomplete).
	CodeStreamIncomplete = 4
	// CodeEarlyStreamData: stream data arrived before the handler opened the
	// stream, so it was dropped and the stream cannot succeed.
	CodeEarlyStreamData = 5
	// CodeTooManyStreams: the peer refused to open a stream, having its
	// MaxStreams open (rpc.ErrTooManyStreams); carried by the error reply
	// to the stream-opening call.
	CodeTooManyStreams = 6
)
