package sasl

import (
	"fmt"

	"github.com/virtrpc/virtrpc/transport"
)

// External returns the client side of EXTERNAL (RFC 4422 appendix A): the
// server takes the identity from the verified TLS client certificate, or
// on a unix socket from the client process's uid.
// authzID is the identity to act as; empty means the certificate's own.
func External(authzID string) ClientMechanism { return externalClient{authzID} }

type externalClient struct{ authz string }

func (externalClient) Name() string { return MechExternal }

func (e externalClient) Start(cs ConnState) (ClientSession, error) {
	if (cs.TLS == nil || len(cs.TLS.PeerCertificates) == 0) && !cs.Local {
		return nil, fail(ReasonMechanismNotOffered, MechExternal, "needs a TLS connection with a client certificate, or a unix socket")
	}
	return &externalClientSession{authz: e.authz}, nil
}

type externalClientSession struct {
	authz string
	sent  bool
}

func (s *externalClientSession) Step(challenge []byte) ([]byte, error) {
	if s.sent || len(challenge) > 0 {
		return nil, fail(ReasonMalformed, MechExternal, "unexpected challenge from the server")
	}
	s.sent = true
	return []byte(s.authz), nil // empty, not nil: "the identity of the certificate"
}

func (s *externalClientSession) Finish(final []byte) error {
	if len(final) > 0 {
		return fail(ReasonMalformed, MechExternal, "unexpected data in the server's final reply")
	}
	return nil
}

func (*externalClientSession) SecurityLayer() SecurityLayer { return nil }

// ExternalServer returns the server side of EXTERNAL: offered on TLS
// connections whose client certificate was verified, where the identity is
// the certificate's subject DN (as libvirt's tls_allowed_dn_list sees it),
// and on unix sockets with peer credentials, where it is "uid=N".
func ExternalServer() ServerMechanism { return externalServer{} }

type externalServer struct{}

func (externalServer) Name() string { return MechExternal }

func (externalServer) Available(cs ConnState) bool { return externalName(cs) != "" }

// externalName is the identity EXTERNAL gives on cs, or "".
func externalName(cs ConnState) string {
	if cs.TLS != nil && len(cs.TLS.VerifiedChains) > 0 && len(cs.TLS.VerifiedChains[0]) > 0 {
		return transport.DN(cs.TLS.VerifiedChains[0][0])
	}
	if cs.Peer != nil {
		return fmt.Sprintf("uid=%d", cs.Peer.UID)
	}
	return ""
}

func (e externalServer) Start(cs ConnState) (ServerSession, error) {
	name := externalName(cs)
	if name == "" {
		return nil, fail(ReasonMechanismNotOffered, MechExternal, "no verified TLS client certificate, no unix peer credentials")
	}
	return &externalServerSession{dn: name}, nil
}

type externalServerSession struct {
	dn    string
	id    *Identity
	asked bool
}

func (s *externalServerSession) Step(resp []byte) ([]byte, bool, error) {
	if resp == nil && !s.asked {
		s.asked = true
		return []byte{}, false, nil
	}
	if len(resp) > maxPlainField {
		return nil, false, fail(ReasonMalformed, MechExternal, "authorization identity of %d bytes", len(resp))
	}
	s.id = &Identity{Mechanism: MechExternal, Username: s.dn, AuthzID: string(resp)}
	return nil, true, nil
}

func (s *externalServerSession) Identity() *Identity        { return s.id }
func (*externalServerSession) SecurityLayer() SecurityLayer { return nil }
