package xdr

import "testing"

// benchArgs is a small, typical call payload: remote_nonnull_domain plus flags.
type benchArgs struct {
	Dom   remoteNonnullDomain
	Flags uint32
}

var benchValue = benchArgs{
	Dom:   remoteNonnullDomain{Name: "guest-01", UUID: [16]byte{1, 2, 3}, ID: 5},
	Flags: 3,
}

func BenchmarkMarshal(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(&benchValue); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 128)
	for b.Loop() {
		var err error
		if buf, err = Append(buf[:0], &benchValue); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	in, err := Marshal(&benchValue)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	var out benchArgs
	for b.Loop() {
		if err := Unmarshal(in, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// The hand-written equivalents show the cost of reflection.
func BenchmarkEncoderByHand(b *testing.B) {
	b.ReportAllocs()
	e := NewEncoder(make([]byte, 0, 128))
	for b.Loop() {
		e.Reset(e.Bytes()[:0])
		e.String(benchValue.Dom.Name)
		e.FixedOpaque(benchValue.Dom.UUID[:])
		e.Int32(benchValue.Dom.ID)
		e.Uint32(benchValue.Flags)
	}
}

func BenchmarkDecoderByHand(b *testing.B) {
	in, err := Marshal(&benchValue)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var out benchArgs
	for b.Loop() {
		d := NewDecoder(in)
		out.Dom.Name, _ = d.String(4194304)
		uuid, _ := d.fixed(16)
		copy(out.Dom.UUID[:], uuid)
		out.Dom.ID, _ = d.Int32()
		out.Flags, _ = d.Uint32()
		if err := d.Done(); err != nil {
			b.Fatal(err)
		}
	}
}
