//go:build linux

package streamcore

import (
	"context"
	"errors"
	"io"
	"syscall"
)

// lseek whence values for sparse files (Linux).
const (
	seekData = 3
	seekHole = 4
)

type seekFile interface {
	io.Reader
	io.Seeker
}

// readFromSparse sends a file's data extents as data and its holes as holes,
// from the file's current offset to its end. handled is false when the file
// cannot report holes (then nothing was consumed).
func (s *Stream) readFromSparse(f seekFile) (int64, bool, error) {
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, false, nil
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, false, nil
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return 0, true, err
	}
	var total int64
	off := start
	for off < end {
		data, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			data = end // only a hole is left
		} else if err != nil {
			if off == start {
				_, _ = f.Seek(start, io.SeekStart)
				return 0, false, nil // no SEEK_DATA here: plain copy
			}
			return total, true, err
		}
		if data > off {
			if err := s.WriteHole(context.Background(), data-off); err != nil {
				return total, true, err
			}
			total += data - off
			off = data
		}
		if off >= end {
			break
		}
		hole, err := f.Seek(off, seekHole)
		if err != nil {
			return total, true, err
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return total, true, err
		}
		want := hole - off
		n, err := s.copyFrom(f, want)
		total += n
		off += n
		if err != nil {
			return total, true, err
		}
		if n < want {
			return total, true, io.ErrUnexpectedEOF // the file shrank under us
		}
	}
	_, err = f.Seek(end, io.SeekStart)
	return total, true, err
}
