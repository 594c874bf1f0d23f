package rpc_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/virtrpc/virtrpc/rpc"
)

// FuzzServerConn feeds arbitrary bytes to a serving connection, as a hostile
// or broken client would: the connection must end (or keep going) without a
// panic, a hang or a leak, whatever arrives.
func FuzzServerConn(f *testing.F) {
	f.Add(helloFrame(1 << 20))
	f.Add(append(helloFrame(1<<20), rawFrame(hdr(procedure(verifyUploadProc), 0, 1, 0), make([]byte, 32))...))
	f.Add(lenWord(0xffffffff))
	for _, name := range []string{"06-storage-upload-download", "07-storage-sparse-holes", "09-stream-abort", "01-basic-calls"} {
		if b, err := os.ReadFile(filepath.Join("..", "testdata", "libvirt-wire", name, "client-to-server.bin")); err == nil {
			if len(b) > 64<<10 {
				b = b[:64<<10]
			}
			f.Add(b)
		}
	}
	mux := streamMux(nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		srv := rpc.Server(b, &rpc.Options{Handlers: mux, KeepaliveInterval: -1})
		go func() { _, _ = io.Copy(io.Discard, a) }()
		_ = a.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = a.Write(in)
		_ = a.Close()
		select {
		case <-srv.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the connection did not end after its peer closed")
		}
		_ = srv.Close()
	})
}
