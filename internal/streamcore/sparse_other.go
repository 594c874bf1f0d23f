//go:build !linux

package streamcore

import "io"

type seekFile interface {
	io.Reader
	io.Seeker
}

func (s *Stream) readFromSparse(f seekFile) (int64, bool, error) { return 0, false, nil }
