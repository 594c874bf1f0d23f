package sasl

import (
	"context"
	"fmt"

	"github.com/virtrpc/virtrpc/internal/glob"
	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/transport"
)

// Identities that come from the transport instead of a SASL exchange
// (ServerOptions.TLSIdentity, UnixIdentity), and an allow-list for all.

// MechUnix is the Identity.Mechanism of a connection authenticated by its
// unix socket peer's credentials (ServerOptions.UnixIdentity).
const MechUnix = "UNIX"

// AuthenticateUnix authenticates c by its unix socket peer's uid, if
// ServerOptions.UnixIdentity allows it and Authorize accepts the identity,
// and opens c's auth gate. It returns the identity, or an *Error saying
// why not (the gate stays closed).
func (s *Server) AuthenticateUnix(ctx context.Context, c *rpc.Conn) (*Identity, error) {
	if !s.opts.UnixIdentity {
		return nil, fail(ReasonMechanismNotOffered, MechUnix, "ServerOptions.UnixIdentity is off")
	}
	if id := IdentityOf(c); id != nil && c.Authenticated() {
		return id, nil
	}
	p := s.connState(c).Peer
	if p == nil {
		return nil, fail(ReasonMechanismNotOffered, MechUnix, "not a unix socket, or no peer credentials")
	}
	id := &Identity{Mechanism: MechUnix, Username: fmt.Sprintf("uid=%d", p.UID)}
	if err := s.authorize(ctx, id); err != nil {
		return nil, err
	}
	return s.openAs(c, id), nil
}

// MechTLS is the Identity.Mechanism of a connection authenticated by its
// verified TLS client certificate (ServerOptions.TLSIdentity).
const MechTLS = "TLS"

// AuthenticateTLS authenticates c by its verified TLS client certificate,
// if ServerOptions.TLSIdentity allows it and Authorize accepts the
// identity, and opens c's auth gate. It returns the identity, or an
// *Error saying why not (the gate stays closed; SASL may still follow).
func (s *Server) AuthenticateTLS(ctx context.Context, c *rpc.Conn) (*Identity, error) {
	if !s.opts.TLSIdentity {
		return nil, fail(ReasonMechanismNotOffered, MechTLS, "ServerOptions.TLSIdentity is off")
	}
	if id := IdentityOf(c); id != nil && c.Authenticated() {
		return id, nil
	}
	cs := s.connState(c)
	if cs.TLS == nil || len(cs.TLS.VerifiedChains) == 0 || len(cs.TLS.VerifiedChains[0]) == 0 {
		return nil, fail(ReasonMechanismNotOffered, MechTLS, "no verified TLS client certificate")
	}
	id := &Identity{Mechanism: MechTLS, Username: transport.DN(cs.TLS.VerifiedChains[0][0])}
	if err := s.authorize(ctx, id); err != nil {
		return nil, err
	}
	return s.openAs(c, id), nil
}

// AllowUsers returns a ServerOptions.Authorize that admits only identities
// whose Username matches one of patterns, as libvirtd's
// sasl_allowed_username_list does ('*' any run of characters, '?' any one:
// "fred", "*@EXAMPLE.COM", "O=virtrpc,CN=*" for EXTERNAL, "uid=0" for UNIX).
// An AuthzID other than the Username is refused as by default.
func AllowUsers(patterns ...string) func(context.Context, *Identity) error {
	pats := append([]string(nil), patterns...)
	return func(_ context.Context, id *Identity) error {
		if id.AuthzID != "" && id.AuthzID != id.Username {
			return fmt.Errorf("%q may not act as %q", id.Username, id.AuthzID)
		}
		if !glob.Any(pats, id.Username) {
			return fmt.Errorf("%q is not on the allowed list", id.Username)
		}
		return nil
	}
}
