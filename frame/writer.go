package frame

import (
	"fmt"
	"io"
)

// Writer writes whole messages, each with exactly one Write call on the
// underlying writer, so a message is never split across TLS records more than
// its size requires and concurrent writers cannot interleave within it (the
// caller still serialises calls).
type Writer struct {
	w   io.Writer
	max int
	buf []byte
}

// NewWriter returns a Writer of messages to w with the libvirt limit of
// MaxMessage; maxMessage > 0 sets another limit.
func NewWriter(w io.Writer, maxMessage int) *Writer {
	if maxMessage <= 0 {
		maxMessage = MaxMessage
	}
	return &Writer{w: w, max: maxMessage}
}

// WriteFrame copies the header and payload into one buffer and writes it.
// Use it for small messages; WriteHeadroom avoids the copy for large ones.
func (fw *Writer) WriteFrame(h Header, payload []byte) error {
	if err := fw.check(len(payload)); err != nil {
		return err
	}
	fw.buf = Append(fw.buf[:0], h, payload)
	_, err := fw.w.Write(fw.buf)
	if cap(fw.buf) > 1<<20 {
		fw.buf = nil // do not pin a huge one-off buffer
	}
	return err
}

// WriteHeadroom writes a message whose payload is already in
// msg[Overhead:]; the header is put into msg[:Overhead] and the whole slice
// is written with one Write, without copying the payload.
func (fw *Writer) WriteHeadroom(h Header, msg []byte) error {
	if len(msg) < Overhead {
		return fmt.Errorf("virtrpc: message buffer of %d bytes has no room for the %d-byte header", len(msg), Overhead)
	}
	if err := fw.check(len(msg) - Overhead); err != nil {
		return err
	}
	PutHeader(msg, h, len(msg)-Overhead)
	_, err := fw.w.Write(msg)
	return err
}

func (fw *Writer) check(payloadLen int) error {
	if HeaderSize+payloadLen > fw.max {
		return fmt.Errorf("virtrpc: %w: message of %d bytes, limit %d", ErrFrameTooLarge, HeaderSize+payloadLen, fw.max)
	}
	return nil
}
