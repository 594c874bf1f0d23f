package frame_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

var testHdr = frame.Header{Prog: remoteProgram, Vers: 1, Proc: 209, Type: frame.TypeStream, Serial: 15, Status: frame.StatusContinue}

// lengthOnly returns a length word followed by a full header (so that only
// the length decides the outcome) and no payload.
func lengthOnly(n uint32) []byte {
	b := make([]byte, frame.Overhead)
	frame.PutHeader(b, testHdr, 0)
	binary.BigEndian.PutUint32(b, n)
	return b
}

func TestReaderLengthLimits(t *testing.T) {
	cases := []struct {
		name   string
		length uint32
		opts   *frame.ReaderOptions
		want   error // nil: Next succeeds
	}{
		{"zero", 0, nil, frame.ErrFrameTooSmall},
		{"only the length word", 4, nil, frame.ErrFrameTooSmall},
		{"one short of a header", 27, nil, frame.ErrFrameTooSmall},
		{"empty payload", 28, nil, nil},
		{"at the 32 MiB limit", frame.MaxMessage + frame.LenSize, nil, nil},
		{"one over the limit", frame.MaxMessage + frame.LenSize + 1, nil, frame.ErrFrameTooLarge},
		{"all ones", 0xffffffff, nil, frame.ErrFrameTooLarge},
		{"top bit", 0x80000000, nil, frame.ErrFrameTooLarge},
		{"custom max, at it", 104, &frame.ReaderOptions{MaxMessage: 100}, nil},
		{"custom max, over it", 105, &frame.ReaderOptions{MaxMessage: 100}, frame.ErrFrameTooLarge},
		{"custom min, at it", 40, &frame.ReaderOptions{MinLen: 40}, nil},
		{"custom min, under it", 39, &frame.ReaderOptions{MinLen: 40}, frame.ErrFrameTooSmall},
		{"min below 28 is raised", 20, &frame.ReaderOptions{MinLen: 4}, frame.ErrFrameTooSmall},
		{"negative options mean defaults", 28, &frame.ReaderOptions{MinLen: -1, MaxMessage: -1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fr := frame.NewReader(bytes.NewReader(lengthOnly(tc.length)), tc.opts)
			h, n, err := fr.Next()
			if tc.want == nil {
				require.NoError(t, err)
				assert.Equal(t, testHdr, h)
				assert.Equal(t, int(tc.length)-frame.Overhead, n)
				assert.Equal(t, n, fr.Remaining())
				return
			}
			require.ErrorIs(t, err, tc.want)
			var pe *frame.ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.Nil(t, pe.Header, "the header is not read when the length is bad")
			assert.Contains(t, err.Error(), "protocol error")
			assert.Zero(t, h)
			assert.Zero(t, n)
		})
	}
}

// TestReaderHugeLengthAllocatesNothing checks that a hostile length word is
// rejected before anything proportional to it is allocated.
func TestReaderHugeLengthAllocatesNothing(t *testing.T) {
	in := lengthOnly(0xffffffff)
	src := bytes.NewReader(in)
	readers := make([]*frame.Reader, 0, 200)
	for range cap(readers) {
		readers = append(readers, frame.NewReader(src, nil))
	}
	i := 0
	run := func() {
		src.Reset(in)
		if _, _, err := readers[i].Next(); !errors.Is(err, frame.ErrFrameTooLarge) {
			t.Fatalf("Next: %v", err)
		}
		i++
	}
	// The error itself (ProtocolError, fmt.Errorf's wrapper and its boxed
	// arguments) is all that may be allocated.
	allocs := testing.AllocsPerRun(50, run)
	assert.LessOrEqual(t, allocs, 6.0, "allocations per rejected length")

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		run()
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / 100
	assert.Less(t, perRun, uint64(1024), "bytes allocated per rejected length")
}

// TestReaderPayloadGrowsWithTheBytesThatArrive: a peer that announces the
// largest message and sends a few bytes of it costs the reader kilobytes, not
// the 32 MiB it announced; a payload that does arrive comes back whole.
func TestReaderPayloadGrowsWithTheBytesThatArrive(t *testing.T) {
	in := make([]byte, frame.Overhead)
	frame.PutHeader(in, testHdr, frame.MaxMessage-frame.HeaderSize)
	in = append(in, "only these bytes arrive"...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fr := frame.NewReader(bytes.NewReader(in), nil)
	_, n, err := fr.Next()
	require.NoError(t, err)
	require.Equal(t, frame.MaxMessage-frame.HeaderSize, n)
	_, err = fr.Payload()
	runtime.ReadMemStats(&after)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "bytes allocated for a truncated 32 MiB payload")

	for _, size := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 5<<20 + 3} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(i * 7)
		}
		fr := frame.NewReader(iotest.HalfReader(bytes.NewReader(frame.Append(nil, testHdr, want))), nil)
		_, _, err := fr.Next()
		require.NoError(t, err)
		got, err := fr.Payload()
		require.NoError(t, err)
		require.Equal(t, size, len(got), "payload length")
		require.True(t, bytes.Equal(want, got), "payload of %d bytes intact", size)
	}
}

// TestReaderNextAllocatesNothing: reading headers and discarding payloads
// must not allocate, whatever the payload size.
func TestReaderNextAllocatesNothing(t *testing.T) {
	one := frame.Append(nil, testHdr, make([]byte, 10000))
	src := bytes.NewReader(one)
	fr := frame.NewReader(iotest.OneByteReader(src), nil)
	allocs := testing.AllocsPerRun(20, func() {
		src.Reset(one)
		if _, _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
		if err := fr.Discard(); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "allocations per Next+Discard")
}

func TestReaderEOF(t *testing.T) {
	two := frame.Append(frame.Append(nil, testHdr, []byte("abcdefgh")), testHdr, nil)
	const ok = "frame"
	cases := []struct {
		name string
		in   []byte
		want []string // outcome of each Next + Payload step
	}{
		{"empty input", nil, []string{"Next: EOF"}},
		{"two whole frames", two, []string{ok, ok, "Next: EOF"}},
		{"EOF in the length word", two[:2], []string{"Next: unexpected EOF"}},
		{"EOF after the length word", two[:4], []string{"Next: unexpected EOF"}},
		{"EOF in the header", two[:20], []string{"Next: unexpected EOF"}},
		{"EOF at the start of the payload", two[:28], []string{"Payload: unexpected EOF"}},
		{"EOF in the payload", two[:33], []string{"Payload: unexpected EOF"}},
		{"EOF in the second length word", two[:38], []string{ok, "Next: unexpected EOF"}},
		{"EOF in the second header", two[:50], []string{ok, "Next: unexpected EOF"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fr := frame.NewReader(bytes.NewReader(tc.in), nil)
			var got []string
			for len(got) < 5 {
				if _, _, err := fr.Next(); err != nil {
					// Exactly io.EOF or io.ErrUnexpectedEOF, not wrapped.
					require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "Next: %v", err)
					got = append(got, "Next: "+err.Error())
					break
				}
				if _, err := fr.Payload(); err != nil {
					require.Equal(t, io.ErrUnexpectedEOF, err)
					got = append(got, "Payload: "+err.Error())
					break
				}
				got = append(got, ok)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReaderStaysFailed(t *testing.T) {
	boom := errors.New("boom")
	t.Run("bad length", func(t *testing.T) {
		in := append(lengthOnly(3), frame.Append(nil, testHdr, nil)...)
		fr := frame.NewReader(bytes.NewReader(in), nil)
		_, _, err := fr.Next()
		require.ErrorIs(t, err, frame.ErrFrameTooSmall)
		_, _, err2 := fr.Next()
		assert.Equal(t, err, err2, "Next after a framing error")
		_, err2 = fr.Read(make([]byte, 4))
		assert.Equal(t, err, err2, "Read after a framing error")
		assert.Equal(t, err, fr.ReadFull(nil), "ReadFull after a framing error")
		assert.Equal(t, err, fr.Discard(), "Discard after a framing error")
		p, err2 := fr.Payload()
		assert.Equal(t, err, err2, "Payload after a framing error")
		assert.Nil(t, p)
	})
	t.Run("error inside the payload", func(t *testing.T) {
		in := frame.Append(nil, testHdr, []byte("0123456789"))
		r := io.MultiReader(bytes.NewReader(in[:30]), iotest.ErrReader(boom), bytes.NewReader(in[30:]))
		fr := frame.NewReader(r, nil)
		_, n, err := fr.Next()
		require.NoError(t, err)
		require.Equal(t, 10, n)
		p := make([]byte, 10)
		got, err := fr.Read(p)
		require.NoError(t, err)
		require.Equal(t, 2, got)
		assert.ErrorIs(t, fr.ReadFull(p[2:]), boom)
		_, _, err = fr.Next()
		assert.ErrorIs(t, err, boom, "the reader cannot resynchronise")
		_, err = fr.Read(p)
		assert.ErrorIs(t, err, boom)
	})
	t.Run("error in the header", func(t *testing.T) {
		in := frame.Append(nil, testHdr, nil)
		fr := frame.NewReader(io.MultiReader(bytes.NewReader(in[:6]), iotest.ErrReader(boom)), nil)
		_, _, err := fr.Next()
		assert.ErrorIs(t, err, boom)
		_, _, err = fr.Next()
		assert.ErrorIs(t, err, boom)
	})
}

func TestReaderPayloadAccess(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes, more than Discard's scratch
	h2 := testHdr
	h2.Serial, h2.Status = 16, frame.StatusOK
	in := frame.Append(frame.Append(frame.Append(nil, testHdr, big), h2, []byte("xyz")), testHdr, big)
	fr := frame.NewReader(bytes.NewReader(in), nil)

	_, n, err := fr.Next()
	require.NoError(t, err)
	require.Equal(t, len(big), n)
	p := make([]byte, 5)
	require.NoError(t, fr.ReadFull(p))
	assert.Equal(t, "01234", string(p))
	assert.Equal(t, len(big)-5, fr.Remaining())
	assert.Error(t, fr.ReadFull(make([]byte, len(big))), "ReadFull past the payload")

	// Next skips the unread rest.
	h, n, err := fr.Next()
	require.NoError(t, err)
	assert.Equal(t, h2, h)
	require.Equal(t, 3, n)

	// Read stops at the payload's end with io.EOF.
	all, err := io.ReadAll(fr)
	require.NoError(t, err)
	assert.Equal(t, "xyz", string(all))
	got, err := fr.Read(p)
	assert.Equal(t, 0, got)
	assert.Equal(t, io.EOF, err)
	assert.NoError(t, fr.Discard(), "Discard of nothing")

	_, _, err = fr.Next()
	require.NoError(t, err)
	require.NoError(t, fr.Discard())
	assert.Zero(t, fr.Remaining())
	_, _, err = fr.Next()
	assert.Equal(t, io.EOF, err)
}

func TestReaderOddReaders(t *testing.T) {
	var in []byte
	var want []captured
	for i, size := range []int{0, 1, 3, 4, 5000, 0, 262120, 7} {
		h := testHdr
		h.Serial = uint32(i)
		p := bytes.Repeat([]byte{byte(i + 1)}, size)
		want = append(want, captured{off: len(in), hdr: h, payload: p})
		in = frame.Append(in, h, p)
	}
	wrappers := map[string]func(io.Reader) io.Reader{
		"OneByteReader": iotest.OneByteReader,
		"HalfReader":    iotest.HalfReader,
		"DataErrReader": iotest.DataErrReader,
		"DataErrReader(OneByteReader)": func(r io.Reader) io.Reader {
			return iotest.DataErrReader(iotest.OneByteReader(r))
		},
	}
	for name, wrap := range wrappers {
		t.Run(name, func(t *testing.T) {
			got, err := readAll(wrap(bytes.NewReader(in)), nil)
			require.NoError(t, err)
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(captured{}), cmp.Comparer(bytes.Equal)); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("TimeoutReader", func(t *testing.T) {
		_, err := readAll(iotest.TimeoutReader(bytes.NewReader(in)), nil)
		assert.ErrorIs(t, err, iotest.ErrTimeout)
	})
}

// recordingWriter keeps every slice passed to Write.
type recordingWriter struct {
	writes [][]byte
	err    error
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func TestWriterOneWritePerMessage(t *testing.T) {
	w := &recordingWriter{}
	fw := frame.NewWriter(w, 0)
	payloads := [][]byte{nil, []byte("x"), bytes.Repeat([]byte{7}, frame.MaxCompatStreamPayload), bytes.Repeat([]byte{9}, 2<<20)}
	var stream []byte
	for i, p := range payloads {
		h := testHdr
		h.Serial = uint32(i)
		require.NoError(t, fw.WriteFrame(h, p))
		require.Len(t, w.writes, i+1, "one Write per WriteFrame")
		want := frame.Append(nil, h, p)
		assert.True(t, bytes.Equal(want, w.writes[i]), "frame %d bytes", i)
		stream = append(stream, w.writes[i]...)
	}
	fs, err := readAll(bytes.NewReader(stream), nil)
	require.NoError(t, err)
	require.Len(t, fs, len(payloads))
	for i, f := range fs {
		assert.Equal(t, uint32(i), f.hdr.Serial)
		assert.True(t, bytes.Equal(payloads[i], f.payload) || len(payloads[i])+len(f.payload) == 0)
	}
}

func TestWriterHeadroomDoesNotCopy(t *testing.T) {
	w := &recordingWriter{}
	fw := frame.NewWriter(w, 0)
	msg := make([]byte, frame.Overhead+frame.AlignedStreamPayload)
	for i := range msg[frame.Overhead:] {
		msg[frame.Overhead+i] = byte(i)
	}
	require.NoError(t, fw.WriteHeadroom(testHdr, msg))
	require.Len(t, w.writes, 1)
	got := w.writes[0]
	require.Len(t, got, len(msg))
	assert.Same(t, &msg[0], &got[0], "Write got the caller's buffer")
	assert.Equal(t, 64<<10, len(got), "an aligned frame is exactly 64 KiB")
	assert.Equal(t, frame.Append(nil, testHdr, msg[frame.Overhead:]), got)

	// A header-only message.
	require.NoError(t, fw.WriteHeadroom(testHdr, make([]byte, frame.Overhead)))
	assert.Equal(t, frame.Append(nil, testHdr, nil), w.writes[1])

	err := fw.WriteHeadroom(testHdr, make([]byte, frame.Overhead-1))
	assert.Error(t, err, "no room for the header")
	assert.Len(t, w.writes, 2, "nothing written")
}

func TestWriterLimit(t *testing.T) {
	w := &recordingWriter{}
	fw := frame.NewWriter(w, 100) // header plus payload
	require.NoError(t, fw.WriteFrame(testHdr, make([]byte, 100-frame.HeaderSize)))
	err := fw.WriteFrame(testHdr, make([]byte, 101-frame.HeaderSize))
	assert.ErrorIs(t, err, frame.ErrFrameTooLarge)
	err = fw.WriteHeadroom(testHdr, make([]byte, frame.Overhead+101-frame.HeaderSize))
	assert.ErrorIs(t, err, frame.ErrFrameTooLarge)
	require.NoError(t, fw.WriteHeadroom(testHdr, make([]byte, frame.Overhead+100-frame.HeaderSize)))
	assert.Len(t, w.writes, 2, "rejected messages are not written")

	// The default is libvirt's 32 MiB, which a default Reader accepts.
	fw = frame.NewWriter(w, -1)
	huge := make([]byte, frame.Overhead+frame.MaxMessage-frame.HeaderSize+1)
	assert.ErrorIs(t, fw.WriteHeadroom(testHdr, huge), frame.ErrFrameTooLarge)
	w.writes = nil
	require.NoError(t, fw.WriteHeadroom(testHdr, huge[:len(huge)-1]))
	fr := frame.NewReader(bytes.NewReader(w.writes[0]), nil)
	_, n, err := fr.Next()
	require.NoError(t, err)
	assert.Equal(t, frame.MaxMessage-frame.HeaderSize, n)
}

func TestWriterPassesErrors(t *testing.T) {
	boom := errors.New("boom")
	fw := frame.NewWriter(&recordingWriter{err: boom}, 0)
	assert.ErrorIs(t, fw.WriteFrame(testHdr, nil), boom)
	assert.ErrorIs(t, fw.WriteHeadroom(testHdr, make([]byte, frame.Overhead)), boom)
}

func TestHeaderRoundTrip(t *testing.T) {
	h := frame.Header{Prog: 0xfedcba98, Vers: 0x01020304, Proc: -2, Type: frame.TypeStreamHole, Serial: frame.ServerSerialBit | 5, Status: frame.StatusError}
	b := make([]byte, frame.Overhead)
	frame.PutHeader(b, h, 1000)
	assert.Equal(t, mustHex(t, "00000404 fedcba98 01020304 fffffffe 00000006 80000005 00000001"), b)
	assert.Equal(t, h, frame.ParseHeader(b))
	assert.Equal(t, "STREAM_HOLE prog=0xfedcba98 vers=16909060 proc=-2 serial=2147483653 status=ERROR", h.String())
	assert.Panics(t, func() { frame.PutHeader(make([]byte, frame.Overhead-1), h, 0) })
	assert.Panics(t, func() { frame.ParseHeader(make([]byte, frame.Overhead-1)) })

	names := map[frame.Type]string{
		frame.TypeCall: "CALL", frame.TypeReply: "REPLY", frame.TypeMessage: "MESSAGE", frame.TypeStream: "STREAM",
		frame.TypeCallWithFDs: "CALL_WITH_FDS", frame.TypeReplyWithFDs: "REPLY_WITH_FDS", frame.TypeStreamHole: "STREAM_HOLE",
		7: "TYPE(7)", 0xffffffff: "TYPE(4294967295)",
	}
	for ty, name := range names {
		assert.Equal(t, name, ty.String())
	}
	for st, name := range map[frame.Status]string{0: "OK", 1: "ERROR", 2: "CONTINUE", 3: "STATUS(3)"} {
		assert.Equal(t, name, st.String())
	}
	assert.Equal(t, 64<<10, frame.Overhead+frame.AlignedStreamPayload)
	// libvirt's 256 KiB of message is header plus payload; the frame is 4 more.
	assert.Equal(t, 256<<10, frame.HeaderSize+frame.MaxCompatStreamPayload)
}

func TestProtocolErrorMessage(t *testing.T) {
	e := &frame.ProtocolError{Err: frame.ErrFrameTooLarge}
	assert.Equal(t, "virtrpc: protocol error: frame length over the limit", e.Error())
	h := testHdr
	e = &frame.ProtocolError{Header: &h, Err: errors.New("credit exceeded")}
	assert.Equal(t, "virtrpc: protocol error in "+h.String()+": credit exceeded", e.Error())
}

// PayloadFunc asks before every growth of the payload's buffer, so a budget
// can refuse a large body as it arrives; what it approved adds up to the
// buffer's capacity.
func TestPayloadFuncChargesEachGrowth(t *testing.T) {
	const size = 1<<20 + 123
	msg := frame.Append(nil, frame.Header{Prog: 1}, bytes.Repeat([]byte{7}, size))
	fr := frame.NewReader(bytes.NewReader(msg), nil)
	_, _, err := fr.Next()
	require.NoError(t, err)
	approved := 0
	p, err := fr.PayloadFunc(func(n int) error { approved += n; return nil })
	require.NoError(t, err)
	assert.Len(t, p, size)
	assert.Equal(t, cap(p), approved)

	fr = frame.NewReader(bytes.NewReader(msg), nil)
	_, _, err = fr.Next()
	require.NoError(t, err)
	errFull := errors.New("budget full")
	approved = 0
	_, err = fr.PayloadFunc(func(n int) error {
		if approved+n > 256<<10 {
			return errFull
		}
		approved += n
		return nil
	})
	assert.ErrorIs(t, err, errFull)
	assert.Equal(t, size-approved, fr.Remaining(), "the rest is left unread")
	require.NoError(t, fr.Discard())
}
