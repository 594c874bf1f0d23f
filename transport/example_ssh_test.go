package transport_test

import (
	"context"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
)

// Reach a virtrpc (or libvirtd) server listening on a unix socket of a
// remote host through its sshd, as qemu+ssh:// does: the host key is
// checked against ~/.ssh/known_hosts, keys come from the ssh-agent.
func ExampleDialSSH() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	home, _ := os.UserHomeDir()
	nc, err := transport.DialSSH(ctx, "host.example:22", "unix", "/var/run/libvirt/libvirt-sock", &transport.SSHOptions{
		User:       "admin",
		KnownHosts: []string{filepath.Join(home, ".ssh", "known_hosts")},
		Agent:      true,
	})
	if err != nil {
		log.Fatal(err) // errors.Is(err, transport.ErrHostKeyUnknown), ErrHostKeyChanged, ErrSSHAuth
	}
	c, err := rpc.Client(ctx, nc, &rpc.Options{Negotiation: rpc.CompatOnly}) // libvirtd speaks compat mode
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
