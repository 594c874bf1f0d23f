package stream_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

// A sparse disk image downloaded into a file: the hole is sent as a hole
// and skipped over in the destination, never written as zeros. (ReadFrom
// from a sparse file finds its holes itself, with SEEK_DATA/SEEK_HOLE.)
func ExampleStream_WriteTo() {
	dir, _ := os.MkdirTemp("", "virtrpc-example")
	defer os.RemoveAll(dir)

	download := rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 9}
	mux := rpc.NewMux()
	mux.Handle(download, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Download, &stream.Options{Sparse: true})
		if err != nil {
			return nil, err
		}
		go func() {
			st.Write([]byte("boot sector"))
			st.WriteHole(context.Background(), 64<<20)
			st.Write([]byte("data at 64 MiB"))
			st.Close()
		}()
		return nil, nil
	})
	a, b := net.Pipe()
	srv := rpc.Server(b, &rpc.Options{Handlers: mux})
	defer srv.Close()
	c, _ := rpc.Client(context.Background(), a, nil)
	defer c.Close()

	st, _, _ := c.OpenStream(context.Background(), download, nil, stream.Download, &stream.Options{Sparse: true})
	out, _ := os.Create(filepath.Join(dir, "copy.img"))
	defer out.Close()
	n, _ := io.Copy(out, st) // uses st.WriteTo: holes become seeks
	fmt.Println(n, "bytes, verdict:", st.Close())
	fmt.Println("data bytes on the wire:", c.Stats().StreamBytesReceived)
	// Output:
	// 67108889 bytes, verdict: <nil>
	// data bytes on the wire: 25
}

// A duplex stream as a net.Conn: here an echo service, as a console or a
// port forward would be tunnelled through the connection.
func ExampleStream_NetConn() {
	echo := rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 10}
	mux := rpc.NewMux()
	mux.Handle(echo, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Duplex, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			nc := st.NetConn()
			io.Copy(nc, nc) // until the client's CloseWrite
			nc.Close()
		}()
		return nil, nil
	})
	a, b := net.Pipe()
	srv := rpc.Server(b, &rpc.Options{Handlers: mux})
	defer srv.Close()
	c, _ := rpc.Client(context.Background(), a, nil)
	defer c.Close()

	st, _, _ := c.OpenStream(context.Background(), echo, nil, stream.Duplex, nil)
	st.Write([]byte("ping over the tunnel"))
	st.CloseWrite() // half-close: we keep reading
	got, _ := io.ReadAll(st)
	fmt.Printf("%s, verdict: %v\n", got, st.Close())
	// Output:
	// ping over the tunnel, verdict: <nil>
}
