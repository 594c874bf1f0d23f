package rpc

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtrpc/virtrpc/frame"
)

// What the read loop does per message for the hostile-peer bounds costs no
// allocation: it runs for every stream frame. (checkUnauthSize allocated
// its header on every message until the error path was split off.)
func TestPerMessageChecksDoNotAllocate(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	for _, auth := range []*AuthGate{nil, {Procedures: []Procedure{{1, 1, 1}}}} {
		c := Server(b, &Options{Auth: auth, KeepaliveInterval: -1})
		c.Authenticate()
		h := frame.Header{Prog: 1, Type: frame.TypeStream, Status: frame.StatusContinue}
		assert.Zero(t, testing.AllocsPerRun(100, func() { _ = c.checkUnauthSize(h, 64<<10) }), "checkUnauthSize, auth gate %v", auth != nil)
		_ = c.Close()
	}
	var n atomic.Int64
	r := countingReader{bytes.NewReader(make([]byte, 1<<20)), &n}
	buf := make([]byte, 1024)
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = r.Read(buf) }), "countingReader.Read")
}
