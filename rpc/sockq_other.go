//go:build !linux

package rpc

import "net"

// socketQueues: the socket's queues are read on Linux only; elsewhere
// sockCheck is off and slowCheck cannot tell our delay from the peer's.
func socketQueues(net.Conn) (in, out func() (int64, bool)) { return nil, nil }

// socketAcked: TCP_INFO is read on Linux only; elsewhere keepalive counts
// the bytes we wrote.
func socketAcked(net.Conn) func() (int64, bool) { return nil }
