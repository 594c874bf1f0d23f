package transport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/transport"
)

// A libvirt-style TLS server and client on loopback: the server requires a
// client certificate and acknowledges the session with libvirt's 0x01 byte,
// which the client checks before using the connection.
func ExampleDialTLS() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	pki, err := testcert.New() // in production: LoadLibvirtServerConfig(dir)
	if err != nil {
		log.Fatal(err)
	}

	ln, err := transport.ListenTLS(ctx, "tcp", "127.0.0.1:0", &transport.TLSOptions{
		Config:     pki.ServerConfig(),
		LibvirtAck: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Handshake (and acknowledge) bounded by a context, then echo.
		if err := transport.Handshake(ctx, c); err != nil {
			log.Print(err)
			return
		}
		io.Copy(c, c)
	}()

	conn, err := transport.DialTLS(ctx, "tcp", ln.Addr().String(), &transport.TLSOptions{
		Config:     pki.ClientConfig(), // in production: LoadLibvirtClientConfig(dir, host)
		LibvirtAck: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("server certificate:", conn.ConnectionState().PeerCertificates[0].Subject.CommonName)

	fmt.Fprint(conn, "hello")
	reply := make([]byte, 5)
	if _, err := io.ReadFull(conn, reply); err != nil {
		log.Fatal(err)
	}
	fmt.Println("echo:", string(reply))

	conn.Close()
	ln.Close()
	<-served
	// Output:
	// server certificate: localhost
	// echo: hello
}

// Tune applies the package's TCP settings to a connection dialed by other
// means; it would reach through a *tls.Conn just the same.
func ExampleTune() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// 64 KiB unsent at most, TCP_NODELAY on (the default).
	err = transport.Tune(c, &transport.TCPOptions{NotSentLowat: 64 << 10})
	fmt.Println("tuned:", err == nil)
	// Output: tuned: true
}
