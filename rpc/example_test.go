package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/virtrpc/virtrpc/rpc"
)

// A handler's failure arrives as a typed error with libvirt's code.
func ExampleConn_Call() {
	lookup := rpc.Procedure{Prog: 0x20008086, Vers: 1, Proc: 23}
	mux := rpc.NewMux()
	mux.Handle(lookup, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return nil, rpc.NewError(42, "Domain not found: %s", req.Payload)
	})
	a, b := net.Pipe()
	srv := rpc.Server(b, &rpc.Options{Handlers: mux})
	defer srv.Close()
	c, err := rpc.Client(context.Background(), a, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	_, err = c.Call(context.Background(), lookup, []byte("web01"))
	var re *rpc.Error
	if errors.As(err, &re) {
		fmt.Println(re.Code, re.Text())
	}
	// Output: 42 Domain not found: web01
}

// Accept returns once the peer's first call settled the mode, so the
// accepting side knows what it serves without polling; Shutdown lets the
// calls in flight finish before it closes.
func ExampleAccept() {
	a, b := net.Pipe()
	accepted := make(chan *rpc.Conn, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv, err := rpc.Accept(ctx, b, nil)
		if err != nil {
			fmt.Println(err)
		}
		accepted <- srv
	}()
	c, err := rpc.Client(context.Background(), a, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	srv := <-accepted
	if srv == nil {
		return
	}
	fmt.Println("server in", srv.Mode(), "mode")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx))
	<-c.Done()
	fmt.Println("client:", c.Err())
	// Output:
	// server in native mode
	// shutdown: <nil>
	// client: virtrpc: connection closed: virtrpc: peer closed the connection
}
