package streamcore

import (
	"sync"

	"github.com/virtrpc/virtrpc/frame"
)

// Buffers are pooled by size class so a steady transfer allocates nothing
// per frame. Each buffer has frame.Overhead bytes of headroom so a send frame
// is written with one Write and no copy of its payload.
var classes = [...]int{16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20}

var pools [len(classes)]sync.Pool

// getBuf returns a buffer holding at least n payload bytes after the
// headroom; put it back with putBuf.
func getBuf(n int) *[]byte { return getSized(n + frame.Overhead) }

// getRecvBuf returns a buffer of at least n bytes, for received data, which
// needs no headroom (libvirt's 262120-byte frames then fit the 256 KiB
// class); put it back with putBuf.
func getRecvBuf(n int) *[]byte { return getSized(n) }

func getSized(need int) *[]byte {
	for i, c := range classes {
		if need <= c {
			if b, ok := pools[i].Get().(*[]byte); ok {
				return b
			}
			b := make([]byte, c)
			return &b
		}
	}
	b := make([]byte, need)
	return &b
}

func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	for i, c := range classes {
		if cap(*b) == c {
			*b = (*b)[:c]
			pools[i].Put(b)
			return
		}
	}
}
