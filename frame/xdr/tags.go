package xdr

import (
	"fmt"
	"strconv"
	"strings"
)

// opts are the per-field settings from an `xdr:"..."` struct tag. They apply
// to the field's own type and pass through pointers, so `xdr:"max=64"` on a
// *string bounds the string.
type opts struct {
	max  int  // bound on a string, opaque or array length; 0 means none
	char bool // []byte uses libvirt's char-array encoding
}

// parseTag parses a comma-separated tag: "-", "char", "max=N".
// Unknown options are errors so that a typo cannot silently drop a bound.
func parseTag(tag string) (o opts, skip bool, err error) {
	if tag == "-" {
		return o, true, nil
	}
	if tag == "" {
		return o, false, nil
	}
	for part := range strings.SplitSeq(tag, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "char":
			o.char = true
		case strings.HasPrefix(part, "max="):
			n, err := strconv.Atoi(part[len("max="):])
			if err != nil || n <= 0 {
				return o, false, fmt.Errorf("option %q: want a positive integer", part)
			}
			o.max = n
		default:
			return o, false, fmt.Errorf("unknown option %q", part)
		}
	}
	return o, false, nil
}
