//go:build !linux

package transport

import "syscall"

// setNotSentLowat is a no-op outside Linux.
func setNotSentLowat(syscall.RawConn, int) error { return nil }
