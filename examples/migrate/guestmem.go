package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
)

// pageSize is the guest page size: migration moves memory page by page.
const pageSize = 4096

// poolSize is the size of the random pool pages are cut from.
const poolSize = 1 << 20

// guestMem is a synthetic guest RAM image read front to back, as a
// migration's memory pass reads it. It is never held in memory: each 4 KiB
// page is produced when it is read. About a quarter of the pages are zero
// (free guest memory); the rest are copied from a precomputed pool of random
// bytes at a page-dependent offset, so generating costs one memcpy per page
// and runs at memory speed, far above what any network stream carries. The
// contents depend only on the seed and the offset, never on how the image is
// read.
type guestMem struct {
	size, off int64
	seed      uint64
	pool      []byte // poolSize+pageSize random bytes
}

func newGuestMem(size int64, seed uint64) *guestMem {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	pool := make([]byte, poolSize+pageSize)
	_, _ = rand.NewChaCha8(key).Read(pool) // never fails
	return &guestMem{size: size, seed: seed, pool: pool}
}

// Read fills p with the next bytes of the image; io.EOF at its end.
func (g *guestMem) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	if rest := g.size - g.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	for n := 0; n < len(p); {
		in := int(g.off % pageSize) // reads need not be page-aligned
		k := min(len(p)-n, pageSize-in)
		if h := mix(g.seed, uint64(g.off/pageSize)); h%4 == 0 {
			clear(p[n : n+k]) // a zero page
		} else {
			base := int(h>>32) % poolSize
			copy(p[n:n+k], g.pool[base+in:])
		}
		n += k
		g.off += int64(k)
	}
	return len(p), nil
}

// mix is splitmix64's finalizer of seed and page number: a cheap,
// well-spread hash that picks each page's kind and contents.
func mix(seed, page uint64) uint64 {
	z := seed + (page+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// byteSize is a flag value in bytes written as 1073741824, 512KiB, 256MiB,
// 1GiB, 4G (binary units) or 500MB (decimal).
type byteSize int64

var units = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3},
	{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"k", 1 << 10},
	{"B", 1},
}

func (b *byteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*float64(mult) >= 1<<62 {
		return fmt.Errorf("want a positive size such as 256MiB, 1GiB or 4GiB, not %q", s)
	}
	*b = byteSize(f * float64(mult))
	return nil
}

func (b *byteSize) String() string {
	for _, u := range units[:4] {
		if *b > 0 && int64(*b)%u.mult == 0 {
			return strconv.FormatInt(int64(*b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(*b), 10)
}
