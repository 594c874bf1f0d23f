package xdr_test

import (
	"errors"
	"fmt"

	"github.com/virtrpc/virtrpc/frame/xdr"
)

// A libvirt-style call argument: a domain reference and flags.
type domain struct {
	Name string `xdr:"max=4096"`
	UUID [16]byte
	ID   int32
}

type getXMLArgs struct {
	Dom   domain
	Flags uint32
}

func Example() {
	args := getXMLArgs{Dom: domain{Name: "web", ID: 7}, Flags: 1}
	b, err := xdr.Marshal(&args)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("% x\n", b[:8])
	fmt.Println(len(b), "bytes")

	var got getXMLArgs
	if err := xdr.Unmarshal(b, &got); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.Dom.Name, got.Dom.ID, got.Flags)

	// Truncated input names the field that could not be read.
	err = xdr.Unmarshal(b[:len(b)-2], &got)
	var de *xdr.DecodeError
	fmt.Println(errors.As(err, &de), de.Field, errors.Is(err, xdr.ErrShort))
	// Output:
	// 00 00 00 03 77 65 62 00
	// 32 bytes
	// web 7 1
	// true Flags true
}

func ExampleEncoder() {
	e := xdr.NewEncoder(make([]byte, 0, 64))
	e.String("abc")
	e.CharArray([]byte("n,"))
	fmt.Printf("% x\n", e.Bytes())

	d := xdr.NewDecoder(e.Bytes())
	s, _ := d.String(16)
	c, _ := d.CharArray(16)
	fmt.Printf("%q %q %v\n", s, c, d.Done())
	// Output:
	// 00 00 00 03 61 62 63 00 00 00 00 02 00 00 00 6e 00 00 00 2c
	// "abc" "n," <nil>
}
