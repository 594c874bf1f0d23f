package virtrpc_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
)

var (
	greet  = rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 1}
	upload = rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 2}
)

// A server with a call and an upload stream, and a client using both. Real
// deployments put TLS under it (see the transport package).
func Example() {
	ctx := context.Background()
	mux := rpc.NewMux()
	mux.Handle(greet, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return []byte("hello, " + string(req.Payload)), nil
	})
	sums := make(chan string, 1)
	mux.Handle(upload, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() { // the reply goes first; then the data flows
			h := sha256.New()
			n, _ := io.Copy(h, st)
			sums <- fmt.Sprintf("%d bytes, sha256 %x", n, h.Sum(nil)[:4])
			st.Close() // the sender's Close returns this verdict
		}()
		return nil, nil
	})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go rpc.Serve(ctx, l, &rpc.Options{Handlers: mux}, nil)
	defer l.Close()

	nc, _ := net.Dial("tcp", l.Addr().String())
	c, _ := rpc.Client(ctx, nc, nil)
	defer c.Close()

	out, _ := c.Call(ctx, greet, []byte("world"))
	fmt.Println(string(out), "in", c.Mode(), "mode")

	st, _, _ := c.OpenStream(ctx, upload, nil, stream.Upload, nil)
	io.Copy(st, strings.NewReader(strings.Repeat("virtrpc ", 1<<20)))
	fmt.Println("verdict:", st.Close())
	fmt.Println(<-sums)
	// Output:
	// hello, world in native mode
	// verdict: <nil>
	// 8388608 bytes, sha256 d65e2ff0
}
