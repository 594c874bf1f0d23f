package sasl

import (
	"bytes"
	"errors"
	"fmt"
)

// Mechanism names.
const (
	MechPlain           = "PLAIN"
	MechExternal        = "EXTERNAL"
	MechSCRAMSHA256     = "SCRAM-SHA-256"
	MechSCRAMSHA256Plus = "SCRAM-SHA-256-PLUS"
)

// Credentials are a user's name and password, for PLAIN and SCRAM.
type Credentials struct {
	Username string
	Password string
	// AuthzID is the identity to act as, if not the user's own; empty for
	// none (servers refuse one other than Username unless told otherwise).
	AuthzID string
}

// maxPlainField is RFC 4616's bound on each of PLAIN's three fields.
const maxPlainField = 255

// Plain returns the client side of PLAIN (RFC 4616): the password crosses
// the connection, so only over TLS or a unix socket.
func Plain(c Credentials) ClientMechanism { return plainClient{c} }

type plainClient struct{ c Credentials }

func (plainClient) Name() string { return MechPlain }

func (p plainClient) Start(ConnState) (ClientSession, error) {
	for _, f := range []string{p.c.AuthzID, p.c.Username, p.c.Password} {
		if len(f) > maxPlainField || bytes.IndexByte([]byte(f), 0) >= 0 {
			return nil, fail(ReasonMalformed, MechPlain, "a field is over %d bytes or holds a NUL", maxPlainField)
		}
	}
	return &plainClientSession{c: p.c}, nil
}

type plainClientSession struct {
	c    Credentials
	sent bool
}

func (s *plainClientSession) Step(challenge []byte) ([]byte, error) {
	if s.sent || len(challenge) > 0 {
		return nil, fail(ReasonMalformed, MechPlain, "unexpected challenge from the server")
	}
	s.sent = true
	return []byte(s.c.AuthzID + "\x00" + s.c.Username + "\x00" + s.c.Password), nil
}

func (s *plainClientSession) Finish(final []byte) error {
	if len(final) > 0 {
		return fail(ReasonMalformed, MechPlain, "unexpected data in the server's final reply")
	}
	if !s.sent {
		return fail(ReasonServerNotVerified, MechPlain, "server claimed success before the credentials were sent")
	}
	return nil
}

func (*plainClientSession) SecurityLayer() SecurityLayer { return nil }

// PlainServer returns the server side of PLAIN, checking passwords
// against store's SCRAM verifiers.
func PlainServer(store CredentialStore) ServerMechanism { return plainServer{store} }

type plainServer struct{ store CredentialStore }

func (plainServer) Name() string             { return MechPlain }
func (plainServer) Available(ConnState) bool { return true }
func (p plainServer) Start(ConnState) (ServerSession, error) {
	return &plainServerSession{store: p.store}, nil
}

type plainServerSession struct {
	store CredentialStore
	id    *Identity
	asked bool
}

// ParsePlain splits PLAIN's message "authzid NUL authcid NUL passwd".
func ParsePlain(msg []byte) (authzID, user, password string, err error) {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: PLAIN message has %d NUL separators, want 2", ErrMalformed, len(parts)-1)
	}
	for i, p := range parts {
		if len(p) > maxPlainField {
			return "", "", "", fmt.Errorf("%w: PLAIN field %d is %d bytes, at most %d", ErrMalformed, i+1, len(p), maxPlainField)
		}
	}
	if len(parts[1]) == 0 {
		return "", "", "", fmt.Errorf("%w: PLAIN message has no user name", ErrMalformed)
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

func (s *plainServerSession) Step(resp []byte) ([]byte, bool, error) {
	if resp == nil && !s.asked { // no initial response: ask for it
		s.asked = true
		return []byte{}, false, nil
	}
	authz, user, pass, err := ParsePlain(resp)
	if err != nil {
		return nil, false, &Error{Reason: ReasonMalformed, Mechanism: MechPlain, Err: err}
	}
	v, err := s.store.Lookup(user)
	if err != nil {
		if errors.Is(err, ErrUnknownUser) {
			decoyVerifier(user).check(pass) // as long as a wrong password takes
			return nil, false, fail(ReasonUnknownUser, MechPlain, "%q", user)
		}
		return nil, false, &Error{Mechanism: MechPlain, Err: err}
	}
	if !v.check(pass) {
		return nil, false, fail(ReasonWrongPassword, MechPlain, "for %q", user)
	}
	s.id = &Identity{Mechanism: MechPlain, Username: user, AuthzID: authz}
	return nil, true, nil
}

func (s *plainServerSession) Identity() *Identity        { return s.id }
func (*plainServerSession) SecurityLayer() SecurityLayer { return nil }
