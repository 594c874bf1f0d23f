package frame

import (
	"encoding/binary"
	"fmt"
)

// HolePayloadSize is the size of a STREAM_HOLE payload: hyper length,
// unsigned int flags.
const HolePayloadSize = 12

// PutHole writes a STREAM_HOLE payload into b[:HolePayloadSize].
func PutHole(b []byte, length int64, flags uint32) {
	binary.BigEndian.PutUint64(b, uint64(length))
	binary.BigEndian.PutUint32(b[8:], flags)
}

// ParseHole decodes a STREAM_HOLE payload. A negative length is an error.
func ParseHole(p []byte) (length int64, flags uint32, err error) {
	if len(p) != HolePayloadSize {
		return 0, 0, fmt.Errorf("virtrpc: hole payload of %d bytes, want %d", len(p), HolePayloadSize)
	}
	length = int64(binary.BigEndian.Uint64(p))
	if length < 0 {
		return 0, 0, fmt.Errorf("virtrpc: hole of negative length %d", length)
	}
	return length, binary.BigEndian.Uint32(p[8:]), nil
}
