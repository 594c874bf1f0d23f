package migrate_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// memSource is a source host's driver: one stream, from memory.
type memSource struct{ data []byte }

func (s memSource) Begin(context.Context) (migrate.Plan, error) {
	return migrate.Plan{Cookie: []byte("guest-01"), Streams: []migrate.StreamInfo{{Name: "memory", Size: int64(len(s.data))}}}, nil
}
func (s memSource) Perform(context.Context, []byte) ([]io.Reader, error) {
	return []io.Reader{bytes.NewReader(s.data)}, nil
}
func (s memSource) Confirm(_ context.Context, _ []byte, failed error) error { return nil } // failed != nil: resume the guest

// bufDestination is a destination host's driver: it keeps what arrives.
type bufDestination struct{ buf bytes.Buffer }

func (d *bufDestination) Prepare(context.Context, *migrate.Incoming) ([]byte, []io.Writer, error) {
	return []byte("ready"), []io.Writer{&d.buf}, nil
}
func (d *bufDestination) Finish(_ context.Context, _ *migrate.Incoming, failed error) ([]byte, error) {
	return []byte("running"), nil // failed != nil: discard what arrived
}

// A migration between two hosts, here the two ends of a net.Pipe (in real
// life transport.ListenTLS on the destination, transport.DialTLS on the
// source).
func ExampleOutgoing() {
	ctx := context.Background()
	a, b := net.Pipe()

	// The destination serves the migration program on its connection.
	dst := &bufDestination{}
	rcv := migrate.NewReceiver(dst, nil)
	defer rcv.Close()
	mux := rpc.NewMux()
	rcv.Register(mux)
	server := rpc.Server(a, &rpc.Options{Handlers: mux})
	defer server.Close()

	// The source runs the phases, at most 100 MB/s.
	conn, err := rpc.Client(ctx, b, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	out := migrate.NewOutgoing(conn, memSource{[]byte("guest memory")}, &migrate.OutgoingOptions{Limit: 100e6})
	err = out.Run(ctx) // an *migrate.Error names the phase and the side
	fmt.Println(err, out.Progress().Total.Bytes, dst.buf.String())
	// Output: <nil> 12 guest memory
}
