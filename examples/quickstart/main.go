// Command quickstart is virtrpc in twenty lines: a call and a 1 GiB stream over TLS.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"math/rand/v2"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
	"github.com/virtrpc/virtrpc/transport"
)

var greet, upload = rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 1}, rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 2}

func main() {
	ctx, pki := context.Background(), must(testcert.New()) // a throwaway CA
	mux, sums := rpc.NewMux(), make(chan []byte, 1)
	mux.Handle(greet, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return []byte("hello, " + string(req.Payload)), nil
	})
	mux.Handle(upload, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		st, err := req.Stream(stream.Upload, nil)
		if err != nil {
			return nil, err
		}
		go func() { // the reply goes first; then the data flows
			h := sha256.New()
			if _, err := io.Copy(h, st); err != nil {
				return // the stream was aborted: the sender's Close says why
			}
			sums <- h.Sum(nil)
			_ = st.Close() // the sender's Close returns this verdict
		}()
		return nil, nil
	})
	l := must(transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{Config: pki.ServerConfig()}))
	go rpc.Serve(ctx, l, &rpc.Options{Handlers: mux}, nil)
	nc := must(transport.DialTLS(ctx, "tcp", l.Addr().String(), &transport.TLSOptions{Config: pki.ClientConfig()}))
	c := must(rpc.Client(ctx, nc, nil))
	defer c.Close()
	fmt.Println(string(must(c.Call(ctx, greet, []byte("world")))), "in", c.Mode(), "mode")
	st, _, err := c.OpenStream(ctx, upload, nil, stream.Upload, nil)
	if err != nil {
		log.Fatal(err)
	}
	h := sha256.New()
	n := must(io.Copy(st, io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{}), 1<<30), h)))
	if err := st.Close(); err != nil { // the server's verdict
		log.Fatal(err)
	}
	if !bytes.Equal(<-sums, h.Sum(nil)) {
		log.Fatal("sha256 differs at the server")
	}
	fmt.Printf("sent %d bytes, sha256 %x… matches at the server\n", n, h.Sum(nil)[:8])
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
