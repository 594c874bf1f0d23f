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

// A sparse disk image downloaded into a file: the holes are sent as holes
// and skipped over in the destination, never written as zeros.
func ExampleStream_WriteTo() {
	dir, _ := os.MkdirTemp("", "virtrpc-example")
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "disk.img")
	f, _ := os.Create(src)
	f.WriteAt([]byte("boot sector"), 0)
	f.WriteAt([]byte("data at 64 MiB"), 64<<20) // 64 MiB of hole before it
	f.Close()

	download := rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 9}
	mux := rpc.NewMux()
	mux.Handle(download, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(&stream.Options{Sparse: true})
		if err != nil {
			return nil, err
		}
		go func() {
			in, _ := os.Open(src)
			defer in.Close()
			st.ReadFrom(in) // finds the holes with SEEK_DATA/SEEK_HOLE
			st.Close()
		}()
		return nil, nil
	})
	a, b := net.Pipe()
	srv := rpc.Server(b, &rpc.Options{Handlers: mux})
	defer srv.Close()
	c, _ := rpc.Client(context.Background(), a, nil)
	defer c.Close()

	st, _, _ := c.OpenStream(context.Background(), download, nil, &stream.Options{Sparse: true})
	out, _ := os.Create(filepath.Join(dir, "copy.img"))
	defer out.Close()
	n, _ := io.Copy(out, st) // uses st.WriteTo: holes become seeks
	fmt.Println(n, "bytes, verdict:", st.Close())
	fmt.Println("data bytes on the wire:", c.Stats().StreamBytesReceived)
	// Output:
	// 67108878 bytes, verdict: <nil>
	// data bytes on the wire: 4110
}
