package frame

import (
	"encoding/binary"
	"fmt"

	"github.com/virtrpc/virtrpc/frame/xdr"
)

// Keepalive is libvirt's keepalive program: MESSAGE frames with serial 0 and
// an empty payload.
const (
	KeepaliveProgram = 0x6b656570 // "keep"
	KeepaliveVersion = 1
	KeepalivePing    = 1
	KeepalivePong    = 2
)

// Control is virtrpc's own program, spoken only between peers that agreed on
// it with HELLO. A libvirt peer answers the HELLO call with an error and never
// sees anything else of it.
const (
	ControlProgram = 0x76727063 // "vrpc"
	ControlVersion = 1

	// ControlHello is a CALL whose arguments and reply are a Hello.
	ControlHello = 1
	// ControlCredit is a MESSAGE granting stream credit: the serial is the
	// stream's serial, the payload an unsigned hyper of bytes granted.
	ControlCredit = 2
)

// Feature names carried in Hello.
const (
	// FeatureFlowControl: per-stream credit; a sender never has more than
	// the granted bytes in flight, and the receiver never pauses reading.
	FeatureFlowControl = "flow-control"
	// FeatureLargeFrames: stream data payloads up to Hello.MaxStreamPayload
	// instead of libvirt's 262120 bytes.
	FeatureLargeFrames = "large-frames"
	// FeatureBidi: either side may send calls and MESSAGE frames. Calls the
	// accepting side starts use serials with the top bit set, so the two
	// sides' serials (and therefore their streams) never collide.
	FeatureBidi = "bidi"
)

// ServerSerialBit marks serials of calls started by the accepting side.
const ServerSerialBit = 1 << 31

// Hello is the argument and the reply of ControlHello. In the reply, Features
// are the ones both sides have.
type Hello struct {
	Version          uint32
	Features         []string `xdr:"max=64"`
	MaxStreamPayload uint32   // largest stream data payload this side accepts
	InitialWindow    uint32   // credit every new stream starts with toward this side
	MaxCalls         uint32   // concurrent calls this side serves
}

// Has reports whether h lists the feature.
func (h *Hello) Has(feature string) bool {
	for _, f := range h.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// EncodeHello returns the XDR payload of h. It panics if h lists more than
// 64 features, the most a peer accepts.
func EncodeHello(h *Hello) []byte {
	b, err := xdr.Marshal(h)
	if err != nil {
		panic(err) // only possible with more than 64 features
	}
	return b
}

// DecodeHello parses a HELLO payload.
func DecodeHello(p []byte) (*Hello, error) {
	h := new(Hello)
	if err := xdr.Unmarshal(p, h); err != nil {
		return nil, fmt.Errorf("virtrpc: bad HELLO payload: %w", err)
	}
	if h.Version == 0 {
		return nil, fmt.Errorf("virtrpc: bad HELLO payload: version 0")
	}
	return h, nil
}

// CreditPayloadSize is the size of a ControlCredit payload.
const CreditPayloadSize = 8

// PutCredit writes a credit payload.
func PutCredit(b []byte, n uint64) { binary.BigEndian.PutUint64(b, n) }

// ParseCredit decodes a credit payload.
func ParseCredit(p []byte) (uint64, error) {
	if len(p) != CreditPayloadSize {
		return 0, fmt.Errorf("virtrpc: credit payload of %d bytes, want %d", len(p), CreditPayloadSize)
	}
	return binary.BigEndian.Uint64(p), nil
}

// VerdictPayloadSize is the size of a native-mode verdict: the receiver's
// STREAM/OK answering the sender's finish carries an unsigned hyper, the
// data bytes it consumed. A finish itself is STREAM/OK with an empty
// payload, so the two cannot be taken for each other when both sides finish
// at once.
const VerdictPayloadSize = 8

// PutVerdict writes a verdict payload.
func PutVerdict(b []byte, consumed uint64) { binary.BigEndian.PutUint64(b, consumed) }

// ParseVerdict decodes a verdict payload.
func ParseVerdict(p []byte) (uint64, error) {
	if len(p) != VerdictPayloadSize {
		return 0, fmt.Errorf("virtrpc: verdict payload of %d bytes, want %d", len(p), VerdictPayloadSize)
	}
	return binary.BigEndian.Uint64(p), nil
}
