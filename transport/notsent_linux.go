package transport

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// setNotSentLowat sets TCP_NOTSENT_LOWAT (Linux 3.12+) on the socket.
func setNotSentLowat(rc syscall.RawConn, bytes int) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, bytes)
	})
	if err == nil && serr != nil {
		err = os.NewSyscallError("setsockopt", serr)
	}
	if err != nil {
		return fmt.Errorf("transport: set TCP_NOTSENT_LOWAT: %w", err)
	}
	return nil
}
