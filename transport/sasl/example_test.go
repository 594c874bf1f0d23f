package sasl_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// A server that lets in only SASL-authenticated clients, and a client that
// logs in with a password, over a unix socket.
func ExampleAuthenticate() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sasl-example-")
	defer os.RemoveAll(dir)

	// The server: verifiers for fred, the auth procedures, the gate.
	store := &sasl.MemoryStore{}
	_ = store.AddUser("fred", "secret123")
	auth := sasl.NewServer(&sasl.ServerOptions{Mechanisms: []sasl.ServerMechanism{
		sasl.SCRAMPlusServer(store), sasl.SCRAMServer(store)}})
	mux := rpc.NewMux()
	auth.Register(mux)
	whoami := rpc.Procedure{Prog: 0x20000001, Vers: 1, Proc: 1}
	mux.Handle(whoami, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
		return []byte(sasl.IdentityOf(req.Conn()).Username), nil // never nil behind the gate
	})
	ln, _ := net.Listen("unix", filepath.Join(dir, "sock"))
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rpc.Serve(sctx, ln, &rpc.Options{Handlers: mux, Auth: auth.Gate()}, nil)
	}()
	defer func() { stop(); <-done }()

	// The client.
	nc, _ := net.Dial("unix", filepath.Join(dir, "sock"))
	c, _ := rpc.Client(ctx, nc, nil)
	defer c.Close()
	id, err := sasl.Authenticate(ctx, c, &sasl.ClientOptions{
		Mechanisms: sasl.Password(sasl.Credentials{Username: "fred", Password: "secret123"})})
	if err != nil {
		fmt.Println(err)
		return
	}
	name, _ := c.Call(ctx, whoami, nil)
	fmt.Println(id, string(name))
	// Output: fred (SCRAM-SHA-256) fred
}
