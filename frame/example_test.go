package frame_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/virtrpc/virtrpc/frame"
)

func ExampleReader() {
	var conn bytes.Buffer // stands in for a network connection
	w := frame.NewWriter(&conn, 0)
	call := frame.Header{Prog: 0x20008086, Vers: 1, Proc: 59, Type: frame.TypeCall, Serial: 7}
	_ = w.WriteFrame(call, nil) // CONNECT_GET_HOSTNAME, no arguments
	ping := frame.Header{Prog: frame.KeepaliveProgram, Vers: frame.KeepaliveVersion, Proc: frame.KeepalivePing, Type: frame.TypeMessage}
	_ = w.WriteFrame(ping, nil)
	reply := call
	reply.Type = frame.TypeReply
	_ = w.WriteFrame(reply, []byte{0, 0, 0, 2, 'v', 'm', 0, 0}) // XDR string "vm"

	r := frame.NewReader(&conn, nil)
	for {
		h, n, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println("read:", err)
			return
		}
		payload, err := r.Payload()
		if err != nil {
			fmt.Println("payload:", err)
			return
		}
		fmt.Printf("%s: %d payload bytes %q\n", h, n, payload)
	}
	// Output:
	// CALL prog=0x20008086 vers=1 proc=59 serial=7 status=OK: 0 payload bytes ""
	// MESSAGE prog=0x6b656570 vers=1 proc=1 serial=0 status=OK: 0 payload bytes ""
	// REPLY prog=0x20008086 vers=1 proc=59 serial=7 status=OK: 8 payload bytes "\x00\x00\x00\x02vm\x00\x00"
}

// WriteHeadroom sends stream data without copying it: the caller reads the
// data into the buffer after room for the header.
func ExampleWriter_WriteHeadroom() {
	var conn bytes.Buffer
	w := frame.NewWriter(&conn, 0)
	buf := make([]byte, frame.Overhead+frame.AlignedStreamPayload)
	n := copy(buf[frame.Overhead:], "some bytes of a disk image")
	data := frame.Header{Prog: 0x20008086, Vers: 1, Proc: 208, Type: frame.TypeStream, Serial: 10, Status: frame.StatusContinue}
	if err := w.WriteHeadroom(data, buf[:frame.Overhead+n]); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("% x\n", conn.Bytes()[:frame.Overhead])
	// Output:
	// 00 00 00 36 20 00 80 86 00 00 00 01 00 00 00 d0 00 00 00 03 00 00 00 0a 00 00 00 02
}

func ExampleDecodeError() {
	// The payload of libvirt's reply to DOMAIN_LOOKUP_BY_NAME for a domain
	// that does not exist.
	payload := []byte("\x00\x00\x00*\x00\x00\x00\f\x00\x00\x00\x01\x00\x00\x00\x10Domain not found" +
		"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10Domain not found" +
		"\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00")
	e, err := frame.DecodeError(payload)
	if err != nil {
		fmt.Println(err)
		return
	}
	err = fmt.Errorf("lookup: %w", e)
	var remote *frame.Error
	if errors.As(err, &remote) {
		fmt.Println(remote.Code, remote.Domain, remote.Text())
	}
	fmt.Println(err)
	// Output:
	// 42 12 Domain not found
	// lookup: remote error: Domain not found (code 42, domain 12)
}

func ExampleParseHole() {
	var p [frame.HolePayloadSize]byte
	frame.PutHole(p[:], 1<<20, 0)
	fmt.Printf("% x\n", p)
	length, flags, err := frame.ParseHole(p[:])
	fmt.Println(length, flags, err)
	// Output:
	// 00 00 00 00 00 10 00 00 00 00 00 00
	// 1048576 0 <nil>
}

func ExampleHello() {
	mine := &frame.Hello{
		Version:          frame.ControlVersion,
		Features:         []string{frame.FeatureFlowControl, frame.FeatureBidi},
		MaxStreamPayload: 1 << 20,
		InitialWindow:    4 << 20,
		MaxCalls:         32,
	}
	got, err := frame.DecodeHello(frame.EncodeHello(mine))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.Has(frame.FeatureBidi), got.Has(frame.FeatureLargeFrames), got.InitialWindow)
	// Output:
	// true false 4194304
}
