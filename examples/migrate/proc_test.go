package main

import (
	"bufio"
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
	"testing"
	"time"
)

// Helpers for the tests that run the built example as real processes.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// exampleBinary builds the example once per test run and returns its path.
func exampleBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vmigbin")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "migrate"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "migrate")
}

// proc is a running example process; its output lines, stdout and stderr
// together, arrive on lines and are kept for the log.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{} // closed once it exited and its output was read
	err   error         // its exit, once done

	mu  sync.Mutex
	out []string
}

// startProc runs the example with args; it is killed at the end of the test.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command(exampleBinary(t), args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Go(func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				p.mu.Lock()
				p.out = append(p.out, sc.Text())
				p.mu.Unlock()
				select {
				case p.lines <- sc.Text():
				default: // nobody waits for lines any more
				}
			}
		})
	}
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Logf("%s (%v):\n%s", name, p.err, p.output())
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

// waitLine returns the first line (from now on) for which match is true.
func (p *proc) waitLine(match func(string) bool, what string) string {
	p.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if match(l) {
				return l
			}
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before %s", p.name, p.err, what)
		case <-timeout:
			p.t.Fatalf("%s: no %s within 60 s", p.name, what)
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s still running after 60 s", p.name)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// errorLines are the lines the process printed as its failure.
func (p *proc) errorLines() []string {
	var errs []string
	for _, l := range strings.Split(p.output(), "\n") {
		if strings.HasPrefix(l, "migrate: ") {
			errs = append(errs, l)
		}
	}
	return errs
}

// requireGone waits until process pid no longer runs (gone, or a zombie
// nobody reaped yet).
func requireGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || zombie(stat) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s (pid %d) still runs 30 s later", what, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func zombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	return i >= 0 && strings.HasPrefix(s[i+1:], " Z")
}

// testCtx is a context for QMP calls of a test.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
