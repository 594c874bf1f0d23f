// Package libvirtd starts a real, throwaway libvirtd for interop tests and
// speaks the few procedures of libvirt's remote program that those tests use.
//
// A daemon runs as root in its own directory with only the storage and secret
// drivers loaded (LIBVIRT_DRIVER_DIR holds symlinks to those two; the test
// driver is built in, so test:///default is served too), listens on a unix
// socket in that directory only, logs to a file there, and is stopped by its
// PID when the test ends.
//
// A privileged libvirtd keeps its drivers' state and locks in /run/libvirt
// (a second daemon fails with "Failed to acquire pid file
// '/run/libvirt/secrets/driver.pid'") and reads its configuration from
// /etc/libvirt. So each daemon starts in a private mount namespace in which
// directories of its own are bind-mounted over those two: daemons of parallel
// tests never meet, nothing on the host is written but an empty /run/libvirt
// mount point, and no pool the host defines is autostarted. Where a mount
// namespace cannot be made (no CAP_SYS_ADMIN), the tests skip, or fail under
// VIRTRPC_REQUIRE_PEERS=1: daemons sharing /run/libvirt cannot run side by
// side, and parallel tests waiting for one another's daemon would deadlock.
package libvirtd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DriverDir is where Debian's libvirt-daemon package installs the drivers.
const DriverDir = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver"

// requirePeers reports whether a missing peer must fail the test (CI sets it).
func requirePeers() bool { return os.Getenv("VIRTRPC_REQUIRE_PEERS") == "1" }

// Require skips the test when libvirtd, virsh or the storage and secret
// drivers are missing, or fails it under VIRTRPC_REQUIRE_PEERS=1, and returns
// the paths of libvirtd and virsh.
func Require(t testing.TB) (libvirtd, virsh string) {
	t.Helper()
	var missing []string
	libvirtd, err := lookPath("libvirtd", "/usr/sbin/libvirtd")
	if err != nil {
		missing = append(missing, "libvirtd (package libvirt-daemon)")
	}
	virsh, err = lookPath("virsh", "/usr/bin/virsh")
	if err != nil {
		missing = append(missing, "virsh (package libvirt-clients)")
	}
	for _, d := range []string{"storage", "secret"} {
		if _, err := os.Stat(driverPath(d)); err != nil {
			missing = append(missing, driverPath(d)+" (package libvirt-daemon)")
		}
	}
	if len(missing) == 0 && os.Geteuid() != 0 {
		missing = append(missing, "root (the storage:///system driver runs in a privileged libvirtd)")
	}
	if len(missing) == 0 {
		if err := mountNamespaceWorks(); err != nil {
			missing = append(missing, "a private mount namespace for each daemon's /run/libvirt ("+err.Error()+")")
		}
	}
	if len(missing) > 0 {
		msg := "real libvirtd not available: missing " + strings.Join(missing, ", ")
		if requirePeers() {
			t.Fatal(msg + " (VIRTRPC_REQUIRE_PEERS=1)")
		}
		t.Skip(msg)
	}
	return libvirtd, virsh
}

func lookPath(name, fallback string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if _, err := os.Stat(fallback); err != nil {
		return "", err
	}
	return fallback, nil
}

func driverPath(name string) string {
	return filepath.Join(DriverDir, "libvirt_driver_"+name+".so")
}

// Options configure a daemon. The zero value keeps libvirtd's defaults.
type Options struct {
	// KeepaliveInterval and KeepaliveCount set libvirtd's keepalive_interval
	// (seconds) and keepalive_count; zero keeps the defaults (5 and 5).
	// libvirtd pings a client only once it has asked for keepalive with
	// CONNECT_SUPPORTS_FEATURE(VIR_DRV_FEATURE_PROGRAM_KEEPALIVE).
	KeepaliveInterval int
	KeepaliveCount    int
	// SASL, if not nil, makes the daemon authenticate clients with Cyrus
	// SASL, on its unix socket and on TLS.
	SASL *SASLOptions
	// TLSDir, if set, is a PKI directory in libvirt's layout (servercert.pem,
	// serverkey.pem, cacert.pem): the daemon listens on TLS at 127.0.0.1 and
	// a free port too (Daemon.TLSAddr), verifying client certificates.
	TLSDir string
	// AllowedDNs, if not nil, is the daemon's tls_allowed_dn_list.
	AllowedDNs []string
	// LogFilters replaces the log level and filters (log_filters, with
	// level 1 output), e.g. "1:rpc.nettlscontext" to see the peer's DN.
	LogFilters string
	// LogKeepalive logs libvirtd's keepalive probes (RPC_KEEPALIVE_SEND,
	// RPC_KEEPALIVE_RECEIVED, ...) at info level, so a test can count the
	// pings the daemon sent and the pongs it got.
	LogKeepalive bool
}

// Daemon is one running libvirtd.
type Daemon struct {
	Dir    string // its directory: config, log, sockets, state
	Socket string // the read-write unix socket
	Log    string // libvirtd's log file
	PID    int

	// TLSAddr is the daemon's TLS address when Options.TLSDir is set.
	TLSAddr string

	virsh    string
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

var (
	nsOnce sync.Once
	nsErr  error // why a mount namespace cannot be made, or nil
)

// mountNamespaceWorks runs `true` in a new mount namespace once.
func mountNamespaceWorks() error {
	nsOnce.Do(func() {
		cmd := exec.Command("/bin/sh", "-c", "true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		if out, err := cmd.CombinedOutput(); err != nil {
			nsErr = fmt.Errorf("mount namespace: %v %s", err, out)
		}
	})
	return nsErr
}

// Start starts a libvirtd for the test and stops it when the test ends. It
// fails the test if the daemon does not come up, with its log.
func Start(t testing.TB, opts *Options) *Daemon {
	t.Helper()
	bin, virsh := Require(t)
	if opts == nil {
		opts = &Options{}
	}
	// A short directory of its own, not t.TempDir(): a unix socket path is
	// limited to 108 bytes, and test names make t.TempDir() paths long.
	dir, err := os.MkdirTemp("", "virtrpc-libvirtd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	d := &Daemon{
		Dir:    dir,
		Socket: filepath.Join(dir, "run", "libvirt-sock"),
		Log:    filepath.Join(dir, "libvirtd.log"),
		virsh:  virsh,
		exited: make(chan struct{}),
	}
	for _, sub := range []string{"drivers", "run", "state/run", "state/etc"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, drv := range []string{"storage", "secret"} {
		if err := os.Symlink(driverPath(drv), filepath.Join(dir, "drivers", filepath.Base(driverPath(drv)))); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`listen_tls = 0
listen_tcp = 0
unix_sock_dir = %q
auth_unix_rw = %[2]q
auth_unix_ro = %[2]q
`, filepath.Join(dir, "run"), authOf(opts))
	var env []string
	if opts.SASL != nil {
		env = setupSASL(t, dir, opts.SASL)
	}
	if opts.TLSDir != "" {
		var tc string
		tc, d.TLSAddr = tlsConf(t, opts.TLSDir, authOf(opts))
		conf = strings.Replace(conf, "listen_tls = 0\n", tc, 1)
		if opts.AllowedDNs != nil {
			q := make([]string, len(opts.AllowedDNs))
			for i, dn := range opts.AllowedDNs {
				q[i] = strconv.Quote(dn)
			}
			conf += "tls_allowed_dn_list = [" + strings.Join(q, ", ") + "]\n"
		}
	}
	if opts.KeepaliveInterval != 0 {
		conf += fmt.Sprintf("keepalive_interval = %d\n", opts.KeepaliveInterval)
	}
	if opts.KeepaliveCount != 0 {
		conf += fmt.Sprintf("keepalive_count = %d\n", opts.KeepaliveCount)
	}
	if opts.LogFilters != "" {
		conf += fmt.Sprintf("log_filters = %q\n", opts.LogFilters)
		conf += fmt.Sprintf("log_outputs = \"1:file:%s\"\n", d.Log)
	} else if opts.LogKeepalive {
		conf += "log_filters = \"2:rpc.keepalive\"\n"
		conf += fmt.Sprintf("log_outputs = \"2:file:%s\"\n", d.Log)
	} else {
		conf += fmt.Sprintf("log_outputs = \"3:file:%s\"\n", d.Log)
	}
	confPath := filepath.Join(dir, "libvirtd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	pidPath := filepath.Join(dir, "libvirtd.pid")
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	// sh does the bind mounts inside the new namespace, then becomes
	// libvirtd (exec), so the PID we hold is libvirtd's.
	script := `set -e
mkdir -p /run/libvirt /etc/libvirt
mount --bind "$1/state/run" /run/libvirt
mount --bind "$1/state/etc" /etc/libvirt
shift
exec "$@"`
	d.cmd = exec.Command("/bin/sh", "-c", script, "sh", dir, bin, "-f", confPath, "-p", pidPath)
	// Pdeathsig: a test binary killed by -timeout takes its daemons along.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGTERM}
	d.cmd.Env = append(os.Environ(), "LIBVIRT_DRIVER_DIR="+filepath.Join(dir, "drivers"))
	d.cmd.Env = append(d.cmd.Env, env...)
	d.cmd.Dir = dir
	d.cmd.Stdout = stderr
	d.cmd.Stderr = stderr
	if opts.TLSDir != "" {
		d.cmd.Args = append(d.cmd.Args, "--listen")
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start libvirtd: %v", err)
	}
	d.PID = d.cmd.Process.Pid
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop libvirtd: %v", err)
		}
		if t.Failed() {
			t.Logf("libvirtd log (%s):\n%s", d.Log, d.LogText())
		}
	})
	if err := d.waitReady(15 * time.Second); err != nil {
		t.Fatalf("libvirtd did not come up: %v\nstderr: %s\nlog:\n%s", err, d.readFile("stderr"), d.LogText())
	}
	if err := d.waitTLS(15 * time.Second); err != nil {
		t.Fatalf("libvirtd's TLS port did not come up: %v\nlog:\n%s", err, d.LogText())
	}
	return d
}

// authOf is the auth_unix_rw and auth_tls setting for opts.
func authOf(opts *Options) string {
	if opts.SASL != nil {
		return "sasl"
	}
	return "none"
}

// waitReady waits until the socket accepts a connection.
func (d *Daemon) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("libvirtd exited: %v", d.waitErr)
		default:
		}
		if c, err := net.DialTimeout("unix", d.Socket, time.Second); err == nil {
			_ = c.Close()
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("socket %s after %v: %w", d.Socket, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the daemon by its PID: SIGTERM, then SIGKILL after 10 s. It
// returns an error if libvirtd did not exit cleanly.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() {
		select {
		case <-d.exited:
			d.stopErr = fmt.Errorf("libvirtd (pid %d) had exited by itself: %v", d.PID, d.waitErr)
			return
		default:
		}
		_ = syscall.Kill(d.PID, syscall.SIGTERM)
		select {
		case <-d.exited:
			var ee *exec.ExitError
			if d.waitErr != nil && !(errors.As(d.waitErr, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM) {
				d.stopErr = fmt.Errorf("libvirtd (pid %d) exit: %v", d.PID, d.waitErr)
			}
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(d.PID, syscall.SIGKILL)
			<-d.exited
			d.stopErr = fmt.Errorf("libvirtd (pid %d) ignored SIGTERM for 10 s and was killed", d.PID)
		}
	})
	return d.stopErr
}

// Exited is closed when the libvirtd process has ended.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Dial connects to the daemon's read-write socket.
func (d *Daemon) Dial(ctx context.Context) (net.Conn, error) {
	var dl net.Dialer
	return dl.DialContext(ctx, "unix", d.Socket)
}

// URI is the URI virsh uses to reach driver ("test:///default",
// "storage:///system") through this daemon's socket.
func (d *Daemon) URI(driver string) string {
	scheme, rest, ok := strings.Cut(driver, "://")
	if !ok {
		panic("libvirtd: not a URI: " + driver)
	}
	return scheme + "+unix://" + rest + "?socket=" + d.Socket
}

// Virsh runs virsh against driver (for example "test:///default") through
// this daemon, and returns its standard output; a failure returns an error
// carrying virsh's standard error.
func (d *Daemon) Virsh(ctx context.Context, driver string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.virsh, append([]string{"-q", "-c", d.URI(driver)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// LogText returns the daemon's log so far.
func (d *Daemon) LogText() string { return d.readFile("libvirtd.log") }

func (d *Daemon) readFile(name string) string {
	b, err := os.ReadFile(filepath.Join(d.Dir, name))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// LogLines returns the log lines that contain every one of substrs.
func (d *Daemon) LogLines(substrs ...string) []string {
	f, err := os.Open(d.Log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
next:
	for sc.Scan() {
		for _, s := range substrs {
			if !strings.Contains(sc.Text(), s) {
				continue next
			}
		}
		lines = append(lines, sc.Text())
	}
	return lines
}
