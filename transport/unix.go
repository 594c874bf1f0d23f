package transport

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
)

// DialUnix connects to the unix stream socket at path. ctx bounds the
// connect only.
func DialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	return c, nil
}

// ListenUnix listens on the unix stream socket at path. ctx bounds setting
// up the listener, not its lifetime. Closing the listener removes the
// socket file.
//
// If path is already a socket file, ListenUnix connects to it: when nothing
// accepts (the connection is refused, as after a crash) it removes the stale
// file and listens; when a live listener answers, it leaves the file alone
// and returns an error matching [syscall.EADDRINUSE]. That probe shows up at
// the live listener as a connection closed without a byte. A path that
// exists but is not a socket is never removed. Two processes taking over the
// same stale path at once can still trip over each other; give each server
// its own path.
func ListenUnix(ctx context.Context, path string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err == nil {
		return ln, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) || strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if err := removeStaleSocket(ctx, path, err); err != nil {
		return nil, err
	}
	ln, err = lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	return ln, nil
}

// removeStaleSocket removes the socket file at path if no process accepts
// connections on it. listenErr is the EADDRINUSE error that led here.
func removeStaleSocket(ctx context.Context, path string, listenErr error) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // gone meanwhile; just retry
	case err != nil:
		return fmt.Errorf("transport: %w (inspecting it: %w)", listenErr, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("transport: %w (the path exists and is not a socket; not removing it)", listenErr)
	}

	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("transport: %w (another listener is live)", listenErr)
	case errors.Is(err, syscall.ENOENT):
		return nil
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("transport: %w (cannot tell whether it is stale: %w)", listenErr, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("transport: remove stale socket: %w", err)
	}
	return nil
}
