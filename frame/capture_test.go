package frame_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// capturesDir is where the real virsh <-> libvirtd captures live, relative to
// this package's directory (the repository's testdata/libvirt-wire).
const capturesDir = "../testdata/libvirt-wire"

const (
	remoteProgram  = 0x20008086
	shaPattern600k = "7db7de02805282d3332a52410cd586f9a7be3bf46702b8be91b8779b8593a477"
	shaSparse      = "75a7955780289ea534c5aa30c83adbb027e0818e96651015258198a9c325252c"
)

// requireCaptures returns the captures directory, or skips the test when it is
// missing (and fails instead when VIRTRPC_REQUIRE_PEERS=1).
func requireCaptures(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(capturesDir, "README.md")); err != nil {
		msg := fmt.Sprintf("libvirt wire captures not found at %s (testdata/libvirt-wire at the repository root): %v", capturesDir, err)
		if os.Getenv("VIRTRPC_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return capturesDir
}

// conn is one captured connection: both directions with their indexes.
type conn struct {
	name   string // "01-basic-calls" or "04-events/conn2"
	dir    string
	prefix string // "" or "conn2-"
}

func captureConns(t *testing.T) []conn {
	root := requireCaptures(t)
	dirs, err := filepath.Glob(filepath.Join(root, "[0-9][0-9]-*"))
	require.NoError(t, err)
	require.Len(t, dirs, 10, "capture directories")
	var conns []conn
	for _, d := range dirs {
		base := filepath.Base(d)
		conns = append(conns, conn{name: base, dir: d})
		if _, err := os.Stat(filepath.Join(d, "conn2-frames.tsv")); err == nil {
			conns = append(conns, conn{name: base + "/conn2", dir: d, prefix: "conn2-"})
		}
	}
	return conns
}

var directions = []struct{ tag, file string }{
	{"c2s", "client-to-server.bin"},
	{"s2c", "server-to-client.bin"},
}

func (c conn) bin(t *testing.T, dir string) []byte {
	t.Helper()
	for _, d := range directions {
		if d.tag == dir {
			b, err := os.ReadFile(filepath.Join(c.dir, c.prefix+d.file))
			require.NoError(t, err)
			return b
		}
	}
	t.Fatalf("no direction %q", dir)
	return nil
}

// readTSV returns the rows of a tab-separated index as maps keyed by the
// header row's column names.
func readTSV(t *testing.T, path string) []map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	require.NotEmpty(t, lines)
	cols := strings.Split(lines[0], "\t")
	var rows []map[string]string
	for i, l := range lines[1:] {
		f := strings.Split(l, "\t")
		require.Len(t, f, len(cols), "%s line %d", path, i+2)
		row := make(map[string]string, len(cols))
		for j, c := range cols {
			row[c] = f[j]
		}
		rows = append(rows, row)
	}
	return rows
}

func num(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		u, uerr := strconv.ParseUint(s, 0, 64)
		require.NoError(t, uerr, "number %q", s)
		return u
	}
	return uint64(v)
}

// row is one frames.tsv line in the form compared with what the Reader sees.
type row struct {
	Offset, TotalLen     int
	Prog, Vers           uint32
	Proc                 int32
	Type, Serial, Status uint32
	PayloadLen           int
}

func (c conn) wantRows(t *testing.T) map[string][]row {
	out := map[string][]row{}
	for _, r := range readTSV(t, filepath.Join(c.dir, c.prefix+"frames.tsv")) {
		out[r["direction"]] = append(out[r["direction"]], row{
			Offset:     int(num(t, r["offset"])),
			TotalLen:   int(num(t, r["total_len"])),
			Prog:       uint32(num(t, r["prog"])),
			Vers:       uint32(num(t, r["vers"])),
			Proc:       int32(num(t, r["proc"])),
			Type:       uint32(num(t, r["type"])),
			Serial:     uint32(num(t, r["serial"])),
			Status:     uint32(num(t, r["status"])),
			PayloadLen: int(num(t, r["payload_len"])),
		})
	}
	return out
}

// chunks returns the recv() sizes of one direction, checking they tile the
// file exactly.
func (c conn) chunks(t *testing.T, dir string, size int) []int {
	var sizes []int
	off := 0
	for _, r := range readTSV(t, filepath.Join(c.dir, c.prefix+"chunks.tsv")) {
		if r["dir"] != dir {
			continue
		}
		require.Equal(t, off, int(num(t, r["offset"])), "%s %s chunk offsets", c.name, dir)
		n := int(num(t, r["length"]))
		sizes = append(sizes, n)
		off += n
	}
	require.Equal(t, size, off, "%s %s chunks cover the file", c.name, dir)
	return sizes
}

// captured is one frame read back by frame.Reader.
type captured struct {
	off     int
	hdr     frame.Header
	payload []byte
}

func (f captured) row() row {
	return row{
		Offset: f.off, TotalLen: frame.Overhead + len(f.payload),
		Prog: f.hdr.Prog, Vers: f.hdr.Vers, Proc: f.hdr.Proc,
		Type: uint32(f.hdr.Type), Serial: f.hdr.Serial, Status: uint32(f.hdr.Status),
		PayloadLen: len(f.payload),
	}
}

// readAll reads frames until a clean io.EOF; any other error is returned
// with the frames read so far.
func readAll(r io.Reader, opts *frame.ReaderOptions) ([]captured, error) {
	fr := frame.NewReader(r, opts)
	var out []captured
	off := 0
	for {
		h, n, err := fr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if fr.Remaining() != n {
			return out, fmt.Errorf("Remaining %d after Next, want %d", fr.Remaining(), n)
		}
		p, err := fr.Payload()
		if err != nil {
			return out, err
		}
		out = append(out, captured{off: off, hdr: h, payload: p})
		off += frame.Overhead + n
	}
}

func rows(fs []captured) []row {
	out := make([]row, len(fs))
	for i, f := range fs {
		out[i] = f.row()
	}
	return out
}

// chunkReader returns the bytes in exactly the recv() pieces the relay saw:
// no Read returns bytes of two chunks (a piece may be split further when the
// caller asks for less).
type chunkReader struct {
	data  []byte
	sizes []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.sizes) > 0 && r.sizes[0] == 0 {
		r.sizes = r.sizes[1:]
	}
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(len(p), r.sizes[0])])
	r.data, r.sizes[0] = r.data[n:], r.sizes[0]-n
	return n, nil
}

// connFrames reads both directions of c.
func connFrames(t *testing.T, c conn) map[string][]captured {
	out := map[string][]captured{}
	for _, d := range directions {
		fs, err := readAll(bytes.NewReader(c.bin(t, d.tag)), nil)
		require.NoError(t, err, "%s %s", c.name, d.tag)
		out[d.tag] = fs
	}
	return out
}

func TestCapturesMatchIndex(t *testing.T) {
	for _, c := range captureConns(t) {
		t.Run(c.name, func(t *testing.T) {
			want := c.wantRows(t)
			for _, d := range directions {
				data := c.bin(t, d.tag)
				fs, err := readAll(bytes.NewReader(data), nil)
				require.NoError(t, err, "%s: the file must divide into whole frames", d.tag)
				if diff := cmp.Diff(want[d.tag], rows(fs)); diff != "" {
					t.Errorf("%s frames differ from frames.tsv (-tsv +reader):\n%s", d.tag, diff)
				}
				end := 0
				if len(fs) > 0 {
					last := fs[len(fs)-1]
					end = last.off + frame.Overhead + len(last.payload)
				}
				assert.Equal(t, len(data), end, "%s: trailing bytes after the last frame", d.tag)

				// Every frame re-encodes to its original bytes.
				for _, f := range fs {
					orig := data[f.off : f.off+frame.Overhead+len(f.payload)]
					if got := frame.Append(nil, f.hdr, f.payload); !bytes.Equal(got, orig) {
						t.Errorf("%s frame at %d (%s): Append gives\n%x\nwant\n%x", d.tag, f.off, f.hdr, got, orig)
					}
					assert.Equal(t, f.hdr, frame.ParseHeader(orig), "%s ParseHeader at %d", d.tag, f.off)
				}
			}
		})
	}
}

func TestCapturesRecvChunks(t *testing.T) {
	for _, c := range captureConns(t) {
		t.Run(c.name, func(t *testing.T) {
			for _, d := range directions {
				data := c.bin(t, d.tag)
				want, err := readAll(bytes.NewReader(data), nil)
				require.NoError(t, err)
				sizes := c.chunks(t, d.tag, len(data))
				split, merged := chunkStats(want, sizes)
				t.Logf("%s: %d recvs, %d frames split across recvs, %d recvs holding more than one frame", d.tag, len(sizes), split, merged)
				if c.name == "06-storage-upload-download" && d.tag == "c2s" {
					assert.Positive(t, split, "06 upload frames span several recvs")
				}
				if c.name == "02-keepalive-client-ping" && d.tag == "c2s" {
					assert.Positive(t, merged, "02: DEREGISTER and PING coalesced in one recv")
				}

				wrap := map[string]func(io.Reader) io.Reader{
					"raw":   func(r io.Reader) io.Reader { return r },
					"bufio": func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 4096) },
				}
				for name, w := range wrap {
					cr := &chunkReader{data: data, sizes: append([]int(nil), sizes...)}
					got, err := readAll(w(cr), nil)
					require.NoError(t, err, "%s %s", d.tag, name)
					if diff := cmp.Diff(want, got, cmp.AllowUnexported(captured{}), cmp.Comparer(bytes.Equal)); diff != "" {
						t.Errorf("%s via %s recv chunks (-whole +chunked):\n%s", d.tag, name, diff)
					}
				}
			}
		})
	}
}

// chunkStats counts frames spread over more than one recv and recvs that
// hold (parts of) more than one frame.
func chunkStats(fs []captured, sizes []int) (split, merged int) {
	var starts []int // chunk start offsets
	off := 0
	for _, n := range sizes {
		starts = append(starts, off)
		off += n
	}
	chunkOf := func(o int) int { // index of the chunk holding byte o
		i := 0
		for i+1 < len(starts) && starts[i+1] <= o {
			i++
		}
		return i
	}
	frames := make(map[int]int)
	for _, f := range fs {
		first, last := chunkOf(f.off), chunkOf(f.off+frame.Overhead+len(f.payload)-1)
		if first != last {
			split++
		}
		for c := first; c <= last; c++ {
			frames[c]++
		}
	}
	for _, n := range frames {
		if n > 1 {
			merged++
		}
	}
	return split, merged
}

func ptr[T any](v T) *T { return &v }

// findFrame returns the only frame of a direction matching the predicate.
func findFrame(t *testing.T, fs []captured, match func(frame.Header) bool) captured {
	t.Helper()
	var hits []captured
	for _, f := range fs {
		if match(f.hdr) {
			hits = append(hits, f)
		}
	}
	require.Len(t, hits, 1)
	return hits[0]
}

func TestCaptureErrorPayloads(t *testing.T) {
	root := requireCaptures(t)
	cases := []struct {
		capture string
		match   func(frame.Header) bool
		want    *frame.Error
		size    int
	}{{
		capture: "01-basic-calls",
		match: func(h frame.Header) bool {
			return h.Proc == 23 && h.Type == frame.TypeReply && h.Status == frame.StatusError
		},
		want: &frame.Error{
			Code: 42, Domain: 12, Message: ptr("Domain not found"), Level: 2,
			Str1: ptr("Domain not found"), Int1: -1, Int2: -1,
		},
		size: 84,
	}, {
		capture: "10-stream-server-error",
		match: func(h frame.Header) bool {
			return h.Proc == 209 && h.Type == frame.TypeStream && h.Status == frame.StatusError
		},
		want: &frame.Error{
			Code: 38, Domain: 38, Message: ptr("Unable to read /srv/virt/pool/v5: Is a directory"), Level: 2,
			Str1: ptr("%s"), Str2: ptr("Unable to read /srv/virt/pool/v5: Is a directory"), Int1: 21, Int2: -1,
		},
		size: 156,
	}}
	for _, tc := range cases {
		t.Run(tc.capture, func(t *testing.T) {
			fs := connFrames(t, conn{name: tc.capture, dir: filepath.Join(root, tc.capture)})
			f := findFrame(t, fs["s2c"], tc.match)
			require.Len(t, f.payload, tc.size)
			got, err := frame.DecodeError(f.payload)
			require.NoError(t, err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decoded error (-want +got):\n%s", diff)
			}
			assert.Equal(t, f.payload, frame.EncodeError(got), "re-encoded error payload")
			var remote *frame.Error
			require.True(t, errors.As(fmt.Errorf("call: %w", got), &remote))
			assert.Equal(t, *tc.want.Message, remote.Text())
		})
	}

	// Every non-empty ERROR payload in every capture decodes and re-encodes.
	for _, c := range captureConns(t) {
		for dir, fs := range connFrames(t, c) {
			for _, f := range fs {
				if f.hdr.Status != frame.StatusError || len(f.payload) == 0 {
					continue
				}
				e, err := frame.DecodeError(f.payload)
				if assert.NoError(t, err, "%s %s %s", c.name, dir, f.hdr) {
					assert.Equal(t, f.payload, frame.EncodeError(e), "%s %s %s", c.name, dir, f.hdr)
				}
			}
		}
	}
}

type streamKey struct {
	dir    string
	proc   int32
	serial uint32
}

// rebuildStreams joins each stream's data (STREAM/CONTINUE payloads) and
// holes (zeros) per direction, proc and serial.
func rebuildStreams(t *testing.T, fs map[string][]captured) map[streamKey][]byte {
	out := map[streamKey][]byte{}
	for dir, frames := range fs {
		for _, f := range frames {
			k := streamKey{dir, f.hdr.Proc, f.hdr.Serial}
			switch {
			case f.hdr.Type == frame.TypeStream && f.hdr.Status == frame.StatusContinue && len(f.payload) > 0:
				require.LessOrEqual(t, len(f.payload), frame.MaxCompatStreamPayload, "libvirt data frame size")
				out[k] = append(out[k], f.payload...)
			case f.hdr.Type == frame.TypeStreamHole:
				require.Equal(t, frame.StatusContinue, f.hdr.Status, "hole status")
				n, flags, err := frame.ParseHole(f.payload)
				require.NoError(t, err)
				require.Zero(t, flags)
				out[k] = append(out[k], make([]byte, n)...)
			}
		}
	}
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestCaptureStreams(t *testing.T) {
	root := requireCaptures(t)

	// The README's recipe for the source files agrees with its checksums.
	pattern := make([]byte, 614400)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	require.Equal(t, shaPattern600k, sha(pattern))
	sparse := make([]byte, 1310720)
	for o := range sparse {
		if o < 131072 || o >= 1179648 {
			sparse[o] = byte(o % 251)
		}
	}
	require.Equal(t, shaSparse, sha(sparse))

	png := func(t *testing.T, b []byte) {
		assert.Len(t, b, 33443)
		assert.True(t, bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")), "PNG signature: %x", b[:min(8, len(b))])
		assert.True(t, bytes.HasSuffix(b, []byte("IEND\xae\x42\x60\x82")), "PNG ends with IEND")
	}
	hash := func(want string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) { assert.Equal(t, want, sha(b), "sha256 of %d bytes", len(b)) }
	}
	cases := []struct {
		capture string
		streams map[streamKey]func(*testing.T, []byte)
	}{
		{"05-screenshot-stream", map[streamKey]func(*testing.T, []byte){{"s2c", 211, 7}: png}},
		{"06-storage-upload-download", map[streamKey]func(*testing.T, []byte){
			{"c2s", 208, 10}: hash(shaPattern600k),
			{"s2c", 209, 15}: hash(shaPattern600k),
		}},
		{"07-storage-sparse-holes", map[streamKey]func(*testing.T, []byte){
			{"c2s", 208, 10}: hash(shaSparse),
			{"s2c", 209, 15}: hash(shaSparse),
		}},
		// The upload aborted before any data; the download came in full.
		{"09-stream-abort", map[streamKey]func(*testing.T, []byte){{"s2c", 209, 15}: hash(shaPattern600k)}},
		// The failed download sent no data, only its empty EOF and the error.
		{"10-stream-server-error", nil},
	}
	for _, tc := range cases {
		t.Run(tc.capture, func(t *testing.T) {
			got := rebuildStreams(t, connFrames(t, conn{name: tc.capture, dir: filepath.Join(root, tc.capture)}))
			for k, check := range tc.streams {
				b, ok := got[k]
				if assert.True(t, ok, "no stream data for %+v", k) {
					check(t, b)
				}
			}
			for k := range got {
				assert.Contains(t, tc.streams, k, "unexpected stream data")
			}
		})
	}
}

func TestCaptureKeepalive(t *testing.T) {
	want := map[int32][]byte{
		frame.KeepalivePing: mustHex(t, "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000"),
		frame.KeepalivePong: mustHex(t, "0000001c 6b656570 00000001 00000002 00000002 00000000 00000000"),
	}
	seen := map[string]int{}
	for _, c := range captureConns(t) {
		for _, d := range directions {
			data := c.bin(t, d.tag)
			fs, err := readAll(bytes.NewReader(data), nil)
			require.NoError(t, err)
			for _, f := range fs {
				if f.hdr.Prog != frame.KeepaliveProgram {
					assert.Equal(t, uint32(remoteProgram), f.hdr.Prog, "%s %s at %d", c.name, d.tag, f.off)
					continue
				}
				seen[c.name]++
				w, ok := want[f.hdr.Proc]
				if assert.True(t, ok, "%s keepalive proc %d", c.name, f.hdr.Proc) {
					assert.Equal(t, w, data[f.off:f.off+frame.Overhead+len(f.payload)],
						"%s %s keepalive at %d", c.name, d.tag, f.off)
				}
			}
		}
	}
	for _, name := range []string{"02-keepalive-client-ping", "03-keepalive-server-ping", "04-events"} {
		assert.Positive(t, seen[name], "keepalive frames in %s", name)
	}
}

func TestCaptureHoleFrame(t *testing.T) {
	root := requireCaptures(t)
	c := conn{name: "07", dir: filepath.Join(root, "07-storage-sparse-holes")}
	data := c.bin(t, "c2s")
	fs, err := readAll(bytes.NewReader(data), nil)
	require.NoError(t, err)
	f := findFrame(t, fs, func(h frame.Header) bool { return h.Type == frame.TypeStreamHole })
	want := mustHex(t, "00000028 20008086 00000001 000000d0 00000006 0000000a 00000002 00000000 00100000 00000000")
	assert.Equal(t, want, data[f.off:f.off+frame.Overhead+frame.HolePayloadSize])

	var p [frame.HolePayloadSize]byte
	frame.PutHole(p[:], 1<<20, 0)
	assert.Equal(t, f.payload, p[:])
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}
