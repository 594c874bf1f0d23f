package frame

import (
	"encoding/binary"
	"fmt"
)

// Wire sizes and limits.
const (
	// LenSize is the size of the length word that starts every message.
	LenSize = 4
	// HeaderSize is the size of the XDR header after the length word.
	HeaderSize = 24
	// Overhead is what precedes every payload: length word plus header.
	Overhead = LenSize + HeaderSize
	// MinLen is the smallest valid value of the length word (an empty payload).
	MinLen = Overhead
	// MaxMessage is libvirt's limit on a whole message without the length word
	// (header plus payload): 32 MiB.
	MaxMessage = 32 << 20
	// MaxCompatStreamPayload is the largest stream data payload libvirt sends
	// and accepts: 256 KiB minus the 24-byte header (libvirt's
	// VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX).
	MaxCompatStreamPayload = 262120
	// AlignedStreamPayload makes a whole frame exactly 64 KiB, a multiple of
	// TLS's 16 KiB records, so no tiny trailing record is sealed per frame.
	AlignedStreamPayload = 64<<10 - Overhead
)

// Type is the message type in the header.
type Type uint32

// Message types.
const (
	TypeCall         Type = 0
	TypeReply        Type = 1
	TypeMessage      Type = 2
	TypeStream       Type = 3
	TypeCallWithFDs  Type = 4
	TypeReplyWithFDs Type = 5
	TypeStreamHole   Type = 6
	maxKnownType          = TypeStreamHole
	typeNamesUnknown      = "UNKNOWN"
)

var typeNames = [...]string{"CALL", "REPLY", "MESSAGE", "STREAM", "CALL_WITH_FDS", "REPLY_WITH_FDS", "STREAM_HOLE"}

func (t Type) String() string {
	if t <= maxKnownType {
		return typeNames[t]
	}
	return fmt.Sprintf("TYPE(%d)", uint32(t))
}

// Status is the message status in the header.
type Status uint32

// Statuses.
const (
	StatusOK       Status = 0
	StatusError    Status = 1
	StatusContinue Status = 2
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusError:
		return "ERROR"
	case StatusContinue:
		return "CONTINUE"
	}
	return fmt.Sprintf("STATUS(%d)", uint32(s))
}

// Header is the fixed 24-byte XDR header of every message.
type Header struct {
	Prog   uint32
	Vers   uint32
	Proc   int32
	Type   Type
	Serial uint32
	Status Status
}

func (h Header) String() string {
	return fmt.Sprintf("%s prog=%#x vers=%d proc=%d serial=%d status=%s", h.Type, h.Prog, h.Vers, h.Proc, h.Serial, h.Status)
}

// PutHeader writes the length word for a payload of payloadLen bytes and the
// header into b[:Overhead].
func PutHeader(b []byte, h Header, payloadLen int) {
	_ = b[Overhead-1]
	binary.BigEndian.PutUint32(b[0:], uint32(Overhead+payloadLen))
	binary.BigEndian.PutUint32(b[4:], h.Prog)
	binary.BigEndian.PutUint32(b[8:], h.Vers)
	binary.BigEndian.PutUint32(b[12:], uint32(h.Proc))
	binary.BigEndian.PutUint32(b[16:], uint32(h.Type))
	binary.BigEndian.PutUint32(b[20:], h.Serial)
	binary.BigEndian.PutUint32(b[24:], uint32(h.Status))
}

// ParseHeader decodes the header from b[LenSize:Overhead]; it does not check
// the length word.
func ParseHeader(b []byte) Header {
	_ = b[Overhead-1]
	return Header{
		Prog:   binary.BigEndian.Uint32(b[4:]),
		Vers:   binary.BigEndian.Uint32(b[8:]),
		Proc:   int32(binary.BigEndian.Uint32(b[12:])),
		Type:   Type(binary.BigEndian.Uint32(b[16:])),
		Serial: binary.BigEndian.Uint32(b[20:]),
		Status: Status(binary.BigEndian.Uint32(b[24:])),
	}
}

// Append appends one whole message (length word, header, payload) to dst.
func Append(dst []byte, h Header, payload []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, Overhead)...)
	PutHeader(dst[n:], h, len(payload))
	return append(dst, payload...)
}
