//go:build !linux

package rpc

import "net"

// socketQueue: the send queue's length is read on Linux only; elsewhere
// the socket-level stall check is off (see sockCheck).
func socketQueue(net.Conn) func() (int64, bool) { return nil }
