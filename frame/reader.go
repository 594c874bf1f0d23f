package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrFrameTooLarge and ErrFrameTooSmall report a length word outside the
// limits; they are wrapped in a *ProtocolError.
var (
	ErrFrameTooLarge = errors.New("frame length over the limit")
	ErrFrameTooSmall = errors.New("frame length under the minimum")
)

// ProtocolError is a violation of the wire protocol by the peer. The
// connection it came from cannot be used any more.
type ProtocolError struct {
	Header *Header // the offending frame's header, if it was read
	Err    error
}

func (e *ProtocolError) Error() string {
	if e.Header != nil {
		return fmt.Sprintf("virtrpc: protocol error in %s: %v", e.Header, e.Err)
	}
	return fmt.Sprintf("virtrpc: protocol error: %v", e.Err)
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// Reader reads messages one at a time from a byte stream. It never allocates
// for a payload: the caller reads it with Read into memory of its choosing
// (for example straight into a stream consumer's buffer), or with Payload.
//
// Reader does no buffering of its own; wrap an unbuffered connection (TCP,
// unix) in a bufio.Reader. A *tls.Conn already buffers a decrypted record.
type Reader struct {
	r       io.Reader
	max     int // largest message without the length word
	min     int // smallest length word
	hdr     [Overhead]byte
	remain  int // unread payload bytes of the current message
	lastErr error
	scratch []byte // Discard's buffer, allocated on first use
}

// ReaderOptions tunes a Reader; the zero value means libvirt's limits.
type ReaderOptions struct {
	// MaxMessage is the largest message accepted, header plus payload,
	// without the length word. Zero means MaxMessage (32 MiB).
	MaxMessage int
	// MinLen is the smallest length word accepted. Zero means MinLen (28).
	// Values below 28 are raised to 28.
	MinLen int
}

// NewReader returns a Reader of messages from r.
func NewReader(r io.Reader, opts *ReaderOptions) *Reader {
	fr := &Reader{r: r, max: MaxMessage, min: MinLen}
	if opts != nil {
		if opts.MaxMessage > 0 {
			fr.max = min(opts.MaxMessage, math.MaxInt32-LenSize) // a length word is 32 bits
		}
		if opts.MinLen > MinLen {
			fr.min = opts.MinLen
		}
	}
	return fr
}

// Next reads the next message's length word and header. It returns the
// header and the payload length; the payload must then be consumed with Read,
// Payload or Discard before the next call (Next discards what is left).
//
// The length is checked before anything is allocated. io.EOF means the peer
// closed cleanly between messages; io.ErrUnexpectedEOF means it closed inside
// one. A length outside the limits is a *ProtocolError. After an error the
// Reader keeps returning it: the stream cannot be resynchronised.
func (fr *Reader) Next() (Header, int, error) {
	if fr.lastErr != nil {
		return Header{}, 0, fr.lastErr
	}
	if fr.remain > 0 {
		if err := fr.Discard(); err != nil {
			return Header{}, 0, err
		}
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:LenSize]); err != nil {
		return Header{}, 0, fr.fail(err)
	}
	// uint64: on 32-bit platforms int(uint32) turns a huge length negative.
	n := uint64(binary.BigEndian.Uint32(fr.hdr[:LenSize]))
	switch {
	case n < uint64(fr.min):
		return Header{}, 0, fr.fail(&ProtocolError{Err: fmt.Errorf("%w: %d < %d", ErrFrameTooSmall, n, fr.min)})
	case n-LenSize > uint64(fr.max):
		return Header{}, 0, fr.fail(&ProtocolError{Err: fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n-LenSize, fr.max)})
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[LenSize:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, 0, fr.fail(err)
	}
	fr.remain = int(n - Overhead)
	return ParseHeader(fr.hdr[:]), fr.remain, nil
}

// Read reads from the current message's payload; it returns io.EOF at its
// end. Short reads from the underlying reader are passed on.
func (fr *Reader) Read(p []byte) (int, error) {
	if fr.lastErr != nil {
		return 0, fr.lastErr
	}
	if fr.remain == 0 {
		return 0, io.EOF
	}
	if len(p) > fr.remain {
		p = p[:fr.remain]
	}
	n, err := fr.r.Read(p)
	fr.remain -= n
	if err != nil {
		if err == io.EOF && fr.remain > 0 {
			err = io.ErrUnexpectedEOF
		}
		if fr.remain > 0 || err != io.EOF {
			return n, fr.fail(err)
		}
	}
	return n, nil
}

// ReadFull fills p from the current payload, which must hold at least len(p)
// more bytes.
func (fr *Reader) ReadFull(p []byte) error {
	if fr.lastErr != nil {
		return fr.lastErr
	}
	if len(p) > fr.remain {
		return fmt.Errorf("virtrpc: payload read of %d bytes with %d left", len(p), fr.remain)
	}
	_, err := io.ReadFull(fr, p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// payloadStep is the most Payload allocates ahead of the bytes that arrived.
const payloadStep = 64 << 10

// Payload reads the rest of the current payload into a new slice.
//
// A large payload's slice grows as its bytes arrive (doubling from 64 KiB),
// so a peer that announces 32 MiB and sends nothing gets 64 KiB of memory,
// not 32 MiB.
func (fr *Reader) Payload() ([]byte, error) { return fr.PayloadFunc(nil) }

// PayloadFunc is Payload with every growth of the slice first approved by
// grow (if not nil), called with the bytes of capacity about to be added:
// a memory budget charges them, and an error from grow is returned with the
// rest of the payload unread (Discard it to go on).
func (fr *Reader) PayloadFunc(grow func(n int) error) ([]byte, error) {
	if fr.lastErr != nil {
		return nil, fr.lastErr
	}
	step := min(fr.remain, payloadStep)
	if grow != nil && step > 0 {
		if err := grow(step); err != nil {
			return nil, err
		}
	}
	p := make([]byte, 0, step)
	for fr.remain > 0 {
		if len(p) == cap(p) {
			step = min(fr.remain, len(p))
			if grow != nil {
				if err := grow(step); err != nil {
					return nil, err
				}
			}
			np := make([]byte, len(p), len(p)+step) // exactly what grow approved
			copy(np, p)
			p = np
		}
		n := min(fr.remain, cap(p)-len(p))
		if err := fr.ReadFull(p[len(p) : len(p)+n]); err != nil {
			return nil, err
		}
		p = p[:len(p)+n]
	}
	return p, nil
}

// Remaining is the number of unread payload bytes of the current message.
func (fr *Reader) Remaining() int { return fr.remain }

// Discard skips the rest of the current payload.
func (fr *Reader) Discard() error {
	if fr.lastErr != nil {
		return fr.lastErr
	}
	if fr.remain == 0 {
		return nil
	}
	// A stack array would escape through the io.Reader call and be
	// allocated on every Discard; one buffer per Reader is allocated once.
	if fr.scratch == nil {
		fr.scratch = make([]byte, 4096)
	}
	for fr.remain > 0 {
		n := min(fr.remain, len(fr.scratch))
		if err := fr.ReadFull(fr.scratch[:n]); err != nil {
			return err
		}
	}
	return nil
}

func (fr *Reader) fail(err error) error {
	fr.lastErr = err
	return err
}
