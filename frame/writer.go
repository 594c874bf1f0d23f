package frame

import "io"

// Writer writes whole messages, each with exactly one Write call on the
// underlying writer, so a message is never split across TLS records more than
// its size requires and concurrent writers cannot interleave within it (the
// caller still serialises calls). It lays messages out with an Encoder.
type Writer struct {
	w   io.Writer
	enc Encoder
	buf []byte
}

// NewWriter returns a Writer of messages to w with the libvirt limit of
// MaxMessage; maxMessage > 0 sets another limit.
func NewWriter(w io.Writer, maxMessage int) *Writer {
	return &Writer{w: w, enc: Encoder{Max: maxMessage}}
}

// WriteFrame copies the header and payload into one buffer and writes it.
// Use it for small messages; WriteHeadroom avoids the copy for large ones.
func (fw *Writer) WriteFrame(h Header, payload []byte) error {
	var err error
	if fw.buf, err = fw.enc.Append(fw.buf[:0], h, payload); err != nil {
		return err
	}
	_, err = fw.w.Write(fw.buf)
	if cap(fw.buf) > 1<<20 {
		fw.buf = nil // do not pin a huge one-off buffer
	}
	return err
}

// WriteHeadroom writes a message whose payload is already in
// msg[Overhead:]; the header is put into msg[:Overhead] and the whole slice
// is written with one Write, without copying the payload.
func (fw *Writer) WriteHeadroom(h Header, msg []byte) error {
	if err := fw.enc.Headroom(h, msg); err != nil {
		return err
	}
	_, err := fw.w.Write(msg)
	return err
}
