package rpc

import "net"

// writeBatcher is implemented by what package transport puts under the
// *tls.Conn of its DialTLS and ListenTLS: between BatchWrites and
// FlushWrites, the TLS records of one Write (16 KiB of data each) are
// gathered and reach the socket in one write(2) instead of one each.
type writeBatcher interface {
	BatchWrites()
	FlushWrites() error
}

// batchMin: a message that fits one TLS record would gain nothing from a
// batch but a copy.
const batchMin = 16 << 10

// findBatcher returns the writeBatcher at or under nc, following NetConn()
// wrappers, or nil.
func findBatcher(nc net.Conn) writeBatcher {
	for range maxWrappers {
		if b, ok := nc.(writeBatcher); ok {
			return b
		}
		if nc = unwrap(nc); nc == nil {
			return nil
		}
	}
	return nil
}

// writeNet writes b to the connection, a large b as one batch. Only the
// write token's holder calls it, so batches never overlap.
func (s *scheduler) writeNet(b []byte) error {
	if s.batcher == nil || len(b) <= batchMin {
		_, err := s.c.nc.Write(b)
		return err
	}
	s.batcher.BatchWrites()
	_, err := s.c.nc.Write(b)
	if ferr := s.batcher.FlushWrites(); err == nil {
		err = ferr
	}
	return err
}
