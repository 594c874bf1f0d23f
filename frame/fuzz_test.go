package frame_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/virtrpc/virtrpc/frame"
)

// fuzzMax is the small message limit of the fuzzed Reader, so hostile lengths
// are both rejected and accepted often.
const fuzzMax = 256

// FuzzReader feeds arbitrary bytes to a Reader. Seeds live in
// testdata/fuzz/FuzzReader (real frames from the libvirt captures among them).
func FuzzReader(f *testing.F) {
	f.Add([]byte{})
	f.Add(frame.Append(nil, testHdr, []byte("payload")))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := frame.NewReader(bytes.NewReader(data), &frame.ReaderOptions{MaxMessage: fuzzMax})
		var hdrs []frame.Header
		off := 0
		var err error
		for {
			var h frame.Header
			var n int
			if h, n, err = fr.Next(); err != nil {
				break
			}
			if n < 0 || n > fuzzMax-frame.HeaderSize {
				t.Fatalf("payload length %d with MaxMessage %d", n, fuzzMax)
			}
			// The header re-encodes to the bytes it came from.
			var b [frame.Overhead]byte
			frame.PutHeader(b[:], h, n)
			if !bytes.Equal(b[:], data[off:off+frame.Overhead]) {
				t.Fatalf("header at %d re-encodes to %x, input %x", off, b, data[off:off+frame.Overhead])
			}
			var p []byte
			if p, err = fr.Payload(); err != nil {
				break
			}
			if len(p) != n || !bytes.Equal(p, data[off+frame.Overhead:off+frame.Overhead+n]) {
				t.Fatalf("payload at %d: got %d bytes, want %d", off, len(p), n)
			}
			hdrs = append(hdrs, h)
			off += frame.Overhead + n
		}
		var pe *frame.ProtocolError
		switch {
		case err == io.EOF:
			if off != len(data) {
				t.Fatalf("io.EOF at %d of %d bytes", off, len(data))
			}
		case err == io.ErrUnexpectedEOF:
			if off >= len(data) {
				t.Fatalf("unexpected EOF at %d of %d bytes", off, len(data))
			}
		case errors.As(err, &pe):
			if !errors.Is(err, frame.ErrFrameTooSmall) && !errors.Is(err, frame.ErrFrameTooLarge) {
				t.Fatalf("protocol error without a sentinel: %v", err)
			}
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}
		if _, _, err2 := fr.Next(); err2 != err {
			t.Fatalf("Next after %v returned %v", err, err2)
		}

		// A default Reader fed one byte at a time, discarding payloads, sees
		// the same headers (it accepts more, as its limit is higher).
		fr = frame.NewReader(iotest.OneByteReader(bytes.NewReader(data)), nil)
		var again []frame.Header
		for len(again) < len(hdrs) {
			h, _, err := fr.Next()
			if err != nil {
				t.Fatalf("default reader failed after %d frames: %v", len(again), err)
			}
			again = append(again, h)
			if err := fr.Discard(); err != nil {
				t.Fatalf("Discard: %v", err)
			}
		}
		if diff := cmp.Diff(hdrs, again); diff != "" {
			t.Fatalf("headers differ (-small limit +default):\n%s", diff)
		}
	})
}

// FuzzDecodeError decodes arbitrary error payloads. Seeds live in
// testdata/fuzz/FuzzDecodeError.
func FuzzDecodeError(f *testing.F) {
	f.Add(frame.EncodeError(frame.NewError(frame.CodeRPC, "seed")))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := frame.DecodeError(data)
		if err != nil {
			if e != nil {
				t.Fatalf("error %v with a non-nil result", err)
			}
			return
		}
		enc := frame.EncodeError(e)
		// The decoder skips padding without checking it is zero, so the
		// bytes may differ there; everything else must survive.
		if len(enc) != len(data) {
			t.Fatalf("re-encoded %d bytes from %d:\n%x\n%x", len(enc), len(data), enc, data)
		}
		for i := range enc {
			if enc[i] != data[i] && enc[i] != 0 {
				t.Fatalf("byte %d re-encoded as %#x, input %#x", i, enc[i], data[i])
			}
		}
		e2, err := frame.DecodeError(enc)
		if err != nil {
			t.Fatalf("re-encoded payload does not decode: %v", err)
		}
		if diff := cmp.Diff(e, e2); diff != "" {
			t.Fatalf("decode(encode(e)) differs (-first +second):\n%s", diff)
		}
		if !bytes.Equal(frame.EncodeError(e2), enc) {
			t.Fatal("encoding is not stable")
		}
	})
}

// FuzzDecodeHello checks the HELLO payload decoder the same way.
func FuzzDecodeHello(f *testing.F) {
	f.Add(frame.EncodeHello(&frame.Hello{Version: 1, Features: []string{frame.FeatureBidi, frame.FeatureFlowControl}, InitialWindow: 1 << 20}))
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := frame.DecodeHello(data)
		if err != nil {
			return
		}
		if h.Version == 0 || len(h.Features) > 64 {
			t.Fatalf("accepted %+v", h)
		}
		enc := frame.EncodeHello(h)
		if len(enc) != len(data) {
			t.Fatalf("re-encoded %d bytes from %d", len(enc), len(data))
		}
		h2, err := frame.DecodeHello(enc)
		if err != nil {
			t.Fatalf("re-encoded HELLO does not decode: %v", err)
		}
		if diff := cmp.Diff(h, h2); diff != "" {
			t.Fatalf("decode(encode(h)) differs:\n%s", diff)
		}
	})
}
