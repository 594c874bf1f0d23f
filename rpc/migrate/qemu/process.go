package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultBinary is the QEMU that Start runs when ProcessOptions.Binary is
// empty.
const DefaultBinary = "qemu-system-x86_64"

// ProcessOptions say how to start QEMU. The zero value of each field means
// its documented default; Dir is required.
type ProcessOptions struct {
	// Binary: default DefaultBinary, looked up in $PATH.
	Binary string
	// Args are QEMU's arguments; Start adds the QMP socket.
	Args []string
	// Dir holds the QMP socket (qmp.sock); required.
	Dir string
	// Stderr receives QEMU's stdout and stderr; nil: discarded.
	Stderr io.Writer
}

// Process is a QEMU process with its QMP connection. Kill it by its PID
// (Kill) on every exit path; on Linux it is also killed if the process that
// started it dies.
type Process struct {
	QMP *Client
	cmd *exec.Cmd

	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// Start starts QEMU and connects to its QMP socket, bounded by ctx. On
// failure nothing is left running.
func Start(ctx context.Context, opts ProcessOptions) (*Process, error) {
	if opts.Dir == "" {
		return nil, errors.New("qemu: ProcessOptions.Dir is required")
	}
	if strings.ContainsAny(opts.Dir, ",=") {
		return nil, fmt.Errorf("qemu: ProcessOptions.Dir %q: QEMU's options cannot hold ',' or '='", opts.Dir)
	}
	bin := opts.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	sock := filepath.Join(opts.Dir, "qmp.sock")
	_ = os.Remove(sock)
	args := append(append([]string(nil), opts.Args...), "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = opts.Stderr, opts.Stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	p.QMP, err = p.dialQMP(ctx, sock)
	if err != nil {
		_ = p.Kill()
		return nil, err
	}
	return p, nil
}

// dialQMP waits for the QMP socket to appear and connects to it.
func (p *Process) dialQMP(ctx context.Context, sock string) (*Client, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			c, err := Dial(ctx, sock)
			if !errors.Is(err, syscall.ECONNREFUSED) { // the socket exists before QEMU listens
				return c, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu: waiting for its QMP socket: %w", ctx.Err())
		case <-p.exited:
			return nil, fmt.Errorf("qemu exited at start: %v", p.waitErr)
		case <-t.C:
		}
	}
}

// PID is QEMU's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once QEMU has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Kill kills QEMU by its PID and waits for it to exit. It may be called
// more than once, and after QEMU exited by itself.
func (p *Process) Kill() error {
	p.once.Do(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
		}
		<-p.exited
		if p.QMP != nil {
			_ = p.QMP.Close()
		}
	})
	return nil
}

// Quit asks QEMU to quit over QMP and waits for it, killing it if it has
// not exited when ctx ends.
func (p *Process) Quit(ctx context.Context) error {
	err := p.QMP.Execute(ctx, "quit", nil, nil)
	select {
	case <-p.exited:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	_ = p.Kill()
	return err
}
