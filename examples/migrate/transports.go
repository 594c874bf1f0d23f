package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/virtrpc/virtrpc/internal/testcert"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
	"github.com/virtrpc/virtrpc/transport/sasl"
)

// -transport: how the source reaches the destination, and who may.
//
//   - tls (the default): TLS 1.3 on TCP, mutual certificates (-pki DIR in
//     two processes, a throwaway PKI in one).
//   - tcp: plain TCP. The guest's memory crosses unencrypted, so it needs
//     -insecure on both hosts, and SASL SCRAM-SHA-256 is required: the
//     destination takes its users from -sasl-db FILE (examples/saslpasswd
//     writes it), the source logs in with -sasl-user NAME and the password
//     of -sasl-password-file FILE or $VIRTRPC_SASL_PASSWORD. SCRAM never
//     sends the password, but nothing protects the data: loopback or a
//     trusted network only.
//   - unix: a unix socket path (-listen PATH, -connect PATH). EXTERNAL by
//     the peer's uid (only this destination's own uid), or SCRAM when the
//     source gives -sasl-user (and the destination -sasl-db).
//   - ssh (the source only): transport.DialSSH through the sshd at -ssh
//     ADDR to the destination's unix socket (-connect PATH on that host,
//     where the destination runs -transport unix -listen PATH); host key
//     checked against -ssh-known-hosts, key from -ssh-key. Authentication
//     is as for unix (the uid sshd logs the user in as).
//
// In one process the baseline of the verified: line runs over the same
// transport without virtrpc: plain TLS, plain TCP, or a plain unix socket
// (ssh needs an sshd: two processes only).

const saslPasswordEnv = "VIRTRPC_SASL_PASSWORD"

// creds are what one process knows to listen or to connect.
type creds struct {
	kind      string
	serverTLS *tls.Config
	clientTLS *tls.Config
	store     sasl.CredentialStore // the destination's users; nil: none
	user      string               // the source's SASL login; "": EXTERNAL
	password  string
}

// transportName is how the output names the transport.
func transportName(kind string) string {
	return map[string]string{"tls": "TLS", "tcp": "TCP", "unix": "unix socket", "ssh": "SSH"}[kind]
}

// checkTransport rejects combinations of flags that cannot work.
func checkTransport(cfg config) error {
	switch cfg.transport {
	case "tls", "unix":
	case "tcp":
		if !cfg.insecure {
			return errors.New("-transport tcp sends the guest's memory unencrypted: add -insecure to accept that (SASL SCRAM-SHA-256 still authenticates)")
		}
	case "ssh":
		if cfg.listen != "" {
			return errors.New("-transport ssh is the source's: the destination runs -transport unix -listen PATH, and sshd brings the source to it")
		}
		if cfg.connect == "" || cfg.sshAddr == "" {
			return errors.New("-transport ssh needs -ssh ADDR (the sshd) and -connect PATH (the destination's unix socket on that host)")
		}
	default:
		return fmt.Errorf("-transport %q: tls, tcp, unix or ssh", cfg.transport)
	}
	return nil
}

// oneProcessCreds are throwaway credentials for both hosts in one process:
// a PKI, and a SASL user with a random password where the transport needs
// one.
func oneProcessCreds(cfg config) (*creds, error) {
	cr := &creds{kind: cfg.transport}
	switch cfg.transport {
	case "tls":
		pki, err := testcert.New()
		if err != nil {
			return nil, err
		}
		cr.serverTLS, cr.clientTLS = pki.ServerConfig(), pki.ClientConfig()
	case "tcp":
		var b [16]byte
		_, _ = rand.Read(b[:])
		store := &sasl.MemoryStore{}
		cr.user, cr.password = "migrate", hex.EncodeToString(b[:])
		if err := store.AddUser(cr.user, cr.password); err != nil {
			return nil, err
		}
		cr.store = store
	case "ssh":
		return nil, errors.New("-transport ssh needs an sshd: run the destination (-transport unix -listen PATH) and the source (-transport ssh -ssh ADDR -connect PATH) as two processes")
	}
	return cr, nil
}

// destinationCreds are the destination's, from its flags.
func destinationCreds(cfg config, stdout interface{ Write([]byte) (int, error) }) (*creds, error) {
	cr := &creds{kind: cfg.transport}
	switch cfg.transport {
	case "tls":
		if cfg.pki == "" {
			return nil, errors.New("-listen needs -pki DIR (a throwaway PKI is written there if DIR has none)")
		}
		if _, err := os.Stat(filepath.Join(cfg.pki, testcert.CACertFile)); errors.Is(err, os.ErrNotExist) {
			pki, err := testcert.New()
			if err != nil {
				return nil, err
			}
			if err := pki.WriteLibvirtDir(cfg.pki); err != nil {
				return nil, err
			}
			fmt.Fprintf(stdout, "wrote a throwaway PKI to %s: the source needs a copy of it\n", cfg.pki)
		}
		var err error
		if cr.serverTLS, err = transport.LoadLibvirtServerConfig(cfg.pki); err != nil {
			return nil, err
		}
	case "tcp", "unix":
		if cfg.saslDB == "" {
			if cfg.transport == "tcp" {
				return nil, errors.New("-transport tcp needs -sasl-db FILE on the destination (write it with examples/saslpasswd)")
			}
			return cr, nil
		}
		store, err := sasl.OpenFileStore(cfg.saslDB)
		if err != nil {
			return nil, fmt.Errorf("-sasl-db: %w", err)
		}
		cr.store = store
	}
	return cr, nil
}

// sourceCreds are the source's, from its flags and environment.
func sourceCreds(cfg config) (*creds, error) {
	cr := &creds{kind: cfg.transport, user: cfg.saslUser}
	switch {
	case cfg.transport == "tls":
		if cfg.pki == "" {
			return nil, errors.New("-connect needs -pki DIR, a copy of the destination's")
		}
		var err error
		if cr.clientTLS, err = transport.LoadLibvirtClientConfig(cfg.pki, testcert.ServerName); err != nil {
			return nil, err
		}
		return cr, nil
	case cfg.transport == "tcp" && cfg.saslUser == "":
		return nil, errors.New("-transport tcp needs -sasl-user NAME (password from -sasl-password-file FILE or $" + saslPasswordEnv + ")")
	case cfg.saslUser == "":
		return cr, nil // EXTERNAL
	}
	switch {
	case cfg.saslPasswordFile != "":
		b, err := os.ReadFile(cfg.saslPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("-sasl-password-file: %w", err)
		}
		cr.password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	case os.Getenv(saslPasswordEnv) != "":
		cr.password = os.Getenv(saslPasswordEnv)
	default:
		return nil, fmt.Errorf("-sasl-user %s: no password (-sasl-password-file FILE or $%s)", cfg.saslUser, saslPasswordEnv)
	}
	return cr, nil
}

// listen is the destination's listener on addr (a path for unix).
func (cr *creds) listen(ctx context.Context, addr string) (net.Listener, error) {
	switch cr.kind {
	case "tls":
		return transport.ListenTLS(ctx, "tcp", addr, &transport.TLSOptions{Config: cr.serverTLS})
	case "tcp":
		return transport.ListenTCP(ctx, addr, nil)
	case "unix":
		return transport.ListenUnix(ctx, addr)
	}
	return nil, fmt.Errorf("cannot listen with -transport %s", cr.kind)
}

// serve sets up opts to authenticate the source as the transport demands.
func (cr *creds) serve(opts *rpc.Options, mux *rpc.Mux) {
	var mechs []sasl.ServerMechanism
	switch cr.kind {
	case "tcp":
		mechs = []sasl.ServerMechanism{sasl.SCRAMServer(cr.store)}
	case "unix":
		mechs = []sasl.ServerMechanism{sasl.ExternalServer()}
		if cr.store != nil {
			mechs = append(mechs, sasl.SCRAMPlusServer(cr.store), sasl.SCRAMServer(cr.store))
		}
	default:
		return // TLS: the certificates authenticate
	}
	self := fmt.Sprintf("uid=%d", os.Getuid())
	auth := sasl.NewServer(&sasl.ServerOptions{
		Mechanisms:    mechs,
		AllowInsecure: cr.kind == "tcp", // checkTransport demanded -insecure
		Authorize: func(ctx context.Context, id *sasl.Identity) error {
			if id.AuthzID != "" && id.AuthzID != id.Username {
				return fmt.Errorf("%s may not act as %s", id.Username, id.AuthzID)
			}
			if id.Mechanism == sasl.MechExternal && id.Username != self {
				return fmt.Errorf("%s is not this destination's user (%s)", id.Username, self)
			}
			return nil
		},
	})
	auth.Register(mux)
	opts.Auth = auth.Gate()
}

// describe says how the destination authenticates, for its first line.
func (cr *creds) describe(cfg config) string {
	switch cr.kind {
	case "tls":
		return "TLS, certificates in " + cfg.pki
	case "tcp":
		return "plain TCP, unencrypted (-insecure), SASL SCRAM-SHA-256 users in " + cfg.saslDB
	case "unix":
		if cr.store != nil {
			return "unix socket, EXTERNAL (uid " + fmt.Sprint(os.Getuid()) + ") or SCRAM users in " + cfg.saslDB
		}
		return "unix socket, EXTERNAL (uid " + fmt.Sprint(os.Getuid()) + ")"
	}
	return cr.kind
}

// dial connects the source to the destination at addr.
func (cr *creds) dial(ctx context.Context, cfg config, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	switch cr.kind {
	case "tls":
		c, err = transport.DialTLS(ctx, "tcp", addr, &transport.TLSOptions{Config: cr.clientTLS})
	case "tcp":
		c, err = transport.DialTCP(ctx, addr, nil)
	case "unix":
		c, err = transport.DialUnix(ctx, addr)
	case "ssh":
		opts := &transport.SSHOptions{User: cfg.sshUser}
		if cfg.sshKey != "" {
			opts.KeyFiles = []string{cfg.sshKey}
		}
		if cfg.sshKnownHosts != "" {
			opts.KnownHosts = []string{cfg.sshKnownHosts}
		}
		c, err = transport.DialSSH(ctx, cfg.sshAddr, "unix", addr, opts)
	default:
		err = fmt.Errorf("-transport %s", cr.kind)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to the destination at %s: %w", addr, err)
	}
	return c, nil
}

// authenticate logs the source in where the transport needs it and says
// how it did.
func (cr *creds) authenticate(ctx context.Context, conn *rpc.Conn) (string, error) {
	if cr.kind == "tls" {
		return "mutual TLS certificates", nil
	}
	opts := &sasl.ClientOptions{Mechanisms: []sasl.ClientMechanism{sasl.External("")}, AllowInsecure: cr.kind == "tcp"}
	if cr.user != "" {
		opts.Mechanisms = sasl.Password(sasl.Credentials{Username: cr.user, Password: cr.password})
	}
	id, err := sasl.Authenticate(ctx, conn, opts)
	if err != nil {
		return "", fmt.Errorf("authenticating to the destination: %w", err)
	}
	if id != nil && id.Mechanism == sasl.MechExternal {
		return "SASL EXTERNAL (the destination checked the peer's uid)", nil
	}
	return "SASL " + id.String(), nil
}
