package sasl

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/rpc"
)

// reasonMarker prefixes the Reason a virtrpc server puts in str2 of its
// error replies (libvirt's clients show only the message).
const reasonMarker = "virtrpc-sasl:"

// ServerOptions configure a Server. The zero value offers no mechanism:
// set Mechanisms.
type ServerOptions struct {
	// Mechanisms offered, in this order, where each is Available on the
	// connection and the transport allows it.
	Mechanisms []ServerMechanism
	// AllowInsecure offers PLAIN and SCRAM on connections that are neither
	// TLS nor a unix socket. Default false: they are not offered there and
	// a client starting one is refused with ErrInsecureTransport.
	AllowInsecure bool
	// MaxFailures is how many failed attempts a connection may make; the
	// last failure's reply says ErrTooManyAttempts and the connection is
	// then closed. Default 3.
	MaxFailures int
	// FailureDelay holds back each refusal this long before its reply is
	// sent, and the connection's next attempt behind it, so guessing
	// passwords runs at MaxUnauthenticated / FailureDelay attempts a second
	// at most (a ctx that ends cuts it short). Default 500 ms; negative
	// disables.
	FailureDelay time.Duration
	// ServerCertificate is the certificate the server presents: needed for
	// SCRAM-SHA-256-PLUS on TLS 1.2 (tls-server-end-point hashes it); nil
	// offers -PLUS on TLS 1.3 only.
	ServerCertificate *x509.Certificate
	// Authorize decides whether an authenticated identity may use the
	// connection (a user list, say). Nil allows every identity whose
	// AuthzID is empty or its own Username; a non-nil Authorize replaces
	// that rule, so it must check AuthzID itself (AllowUsers does), or a
	// client may name any AuthzID it likes. A refusal counts as a failed
	// attempt, with ErrNotAllowed.
	Authorize func(ctx context.Context, id *Identity) error
	// ConcealReasons makes every refusal say only "authentication failed",
	// as libvirtd's do, so a client cannot tell an unknown user from a
	// wrong password; the reason is still logged. (Either way an unknown
	// user's SCRAM exchange runs to the proof against a decoy verifier, and
	// PLAIN spends a PBKDF2 on it, so neither the failing step nor the
	// timing gives the name away.) Default false: the reply
	// names the reason (and str2 carries it for virtrpc clients), as
	// SCRAM's own e=unknown-user would.
	ConcealReasons bool
	// TLSIdentity lets a verified TLS client certificate authenticate a
	// connection by itself, as libvirtd's auth_tls = "none" does: AUTH_LIST
	// then answers "none" and opens the gate with an Identity of mechanism
	// "TLS" whose Username is the certificate's subject DN (Authorize still
	// decides), and AuthenticateTLS does the same for a client that never
	// calls AUTH_LIST (call it from rpc.Serve's onConn). Default false: only
	// SASL authenticates.
	TLSIdentity bool
	// UnixIdentity lets the peer's credentials on a unix socket
	// (SO_PEERCRED) authenticate a connection by themselves, as libvirtd's
	// auth_unix_rw = "none" does: AUTH_LIST then answers "none" and opens the
	// gate with an Identity of mechanism "UNIX" whose Username is
	// "uid=N" (Authorize still decides: check the uid there). Default false.
	UnixIdentity bool
	// Logger receives failures at info level and successes at debug
	// level; nil is silent.
	Logger *slog.Logger
}

// Server serves libvirt's authentication procedures (AUTH_LIST,
// AUTH_SASL_INIT, AUTH_SASL_START, AUTH_SASL_STEP) for any number of
// connections, and opens a connection's auth gate once a client has
// authenticated, recording its *Identity (IdentityOf reads it back).
type Server struct {
	opts  ServerOptions
	log   *slog.Logger
	conns sync.Map // *rpc.Conn -> *serverConn
}

type serverConn struct {
	mu       sync.Mutex
	offered  []string // AUTH_SASL_INIT's list; nil before it
	sess     ServerSession
	mech     string
	failures int
	closing  bool
}

// NewServer returns a Server; opts may be nil (but offers nothing then).
func NewServer(opts *ServerOptions) *Server {
	s := &Server{}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.MaxFailures <= 0 {
		s.opts.MaxFailures = 3
	}
	if s.opts.FailureDelay == 0 {
		s.opts.FailureDelay = 500 * time.Millisecond
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Gate is the rpc.AuthGate for connections this Server authenticates:
// it lets through the authentication procedures only.
func (s *Server) Gate() *rpc.AuthGate { return &rpc.AuthGate{Procedures: Procedures} }

// Register adds the authentication procedures' handlers to m.
func (s *Server) Register(m *rpc.Mux) {
	m.Handle(proc(ProcAuthList), s.authList)
	m.Handle(proc(ProcAuthSASLInit), s.saslInit)
	m.Handle(proc(ProcAuthSASLStart), s.saslStart)
	m.Handle(proc(ProcAuthSASLStep), s.saslStep)
}

// IdentityOf returns who authenticated on c, or nil if nobody did through
// SASL (the gate may still be open: a connection without an AuthGate).
func IdentityOf(c *rpc.Conn) *Identity {
	id, _ := c.Identity().(*Identity)
	return id
}

func (s *Server) state(c *rpc.Conn) *serverConn {
	if v, ok := s.conns.Load(c); ok {
		return v.(*serverConn)
	}
	v, loaded := s.conns.LoadOrStore(c, &serverConn{})
	if !loaded { // forget the connection with it; this goroutine ends as it closes
		go func() { <-c.Done(); s.conns.Delete(c) }()
	}
	return v.(*serverConn)
}

func (s *Server) authList(ctx context.Context, req *rpc.Request) ([]byte, error) {
	if s.opts.TLSIdentity {
		if _, err := s.AuthenticateTLS(ctx, req.Conn()); err == nil {
			return mustMarshal(&AuthListRet{Types: []int32{AuthNone}}), nil
		}
	}
	if s.opts.UnixIdentity {
		if _, err := s.AuthenticateUnix(ctx, req.Conn()); err == nil {
			return mustMarshal(&AuthListRet{Types: []int32{AuthNone}}), nil
		}
	}
	return mustMarshal(&AuthListRet{Types: []int32{AuthSASL}}), nil
}

// offer is the list of mechanisms offered on cs.
func (s *Server) offer(cs ConnState) []string {
	var names []string
	for _, m := range s.opts.Mechanisms {
		if needsProtection(m.Name()) && !cs.Secure() && !s.opts.AllowInsecure {
			continue
		}
		if m.Available(cs) {
			names = append(names, m.Name())
		}
	}
	return names
}

func (s *Server) connState(c *rpc.Conn) ConnState {
	cs := StateOf(c.NetConn())
	cs.ServerCertificate = s.opts.ServerCertificate
	return cs
}

func (s *Server) saslInit(ctx context.Context, req *rpc.Request) ([]byte, error) {
	c := req.Conn()
	if c.Authenticated() {
		return nil, rpc.NewError(frame.CodeAuthFailed, "authentication failed: already authenticated")
	}
	st := s.state(c)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closing {
		return nil, rpc.NewError(frame.CodeAuthFailed, "authentication failed: %v, closing the connection", ErrTooManyAttempts)
	}
	st.offered = s.offer(s.connState(c))
	st.sess, st.mech = nil, ""
	if len(s.opts.Mechanisms) == 0 {
		return nil, s.failed(ctx, c, st, fail(ReasonMechanismNotOffered, "", "the server has no mechanisms (ServerOptions.Mechanisms is empty)"))
	}
	if len(st.offered) == 0 {
		return nil, s.failed(ctx, c, st, fail(ReasonMechanismNotOffered, "", "no mechanism can run on this connection"))
	}
	return mustMarshal(&SASLInitRet{Mechlist: strings.Join(st.offered, ",")}), nil
}

func (s *Server) saslStart(ctx context.Context, req *rpc.Request) ([]byte, error) {
	c := req.Conn()
	st := s.state(c)
	st.mu.Lock()
	defer st.mu.Unlock()
	if c.Authenticated() || st.closing {
		return nil, rpc.NewError(frame.CodeAuthFailed, "authentication failed: no authentication in progress")
	}
	mech, d, err := DecodeSASLStart(req.Payload)
	if err != nil {
		return nil, s.failed(ctx, c, st, &Error{Reason: ReasonMalformed, Err: err})
	}
	cs := s.connState(c)
	if st.offered == nil {
		st.offered = s.offer(cs)
	}
	cs.Offered = st.offered
	var m ServerMechanism
	for _, x := range s.opts.Mechanisms {
		if x.Name() == mech {
			m = x
		}
	}
	switch {
	case m != nil && needsProtection(mech) && !cs.Secure() && !s.opts.AllowInsecure:
		return nil, s.failed(ctx, c, st, fail(ReasonInsecureTransport, mech, "plain TCP without TLS"))
	case m == nil || !contains(st.offered, mech):
		return nil, s.failed(ctx, c, st, fail(ReasonMechanismNotOffered, mech, "offered: %s", strings.Join(st.offered, ",")))
	}
	sess, err := m.Start(cs)
	if err != nil {
		return nil, s.failed(ctx, c, st, err)
	}
	st.sess, st.mech = sess, mech
	return s.step(ctx, c, st, d)
}

func (s *Server) saslStep(ctx context.Context, req *rpc.Request) ([]byte, error) {
	c := req.Conn()
	st := s.state(c)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sess == nil || c.Authenticated() || st.closing {
		return nil, rpc.NewError(frame.CodeAuthFailed, "authentication failed: no authentication in progress")
	}
	d, err := DecodeSASLStep(req.Payload)
	if err != nil {
		return nil, s.failed(ctx, c, st, &Error{Reason: ReasonMalformed, Mechanism: st.mech, Err: err})
	}
	return s.step(ctx, c, st, d)
}

// step runs one step of st's session; st.mu is held.
func (s *Server) step(ctx context.Context, c *rpc.Conn, st *serverConn, d []byte) ([]byte, error) {
	challenge, done, err := st.sess.Step(d)
	if err == nil && len(challenge) > MaxData {
		err = fail(ReasonMalformed, st.mech, "challenge of %d bytes, at most %d", len(challenge), MaxData)
	}
	if err != nil {
		return nil, s.failed(ctx, c, st, err)
	}
	if !done {
		return mustMarshal(&SASLReply{Nil: nilFlag(challenge), Data: challenge}), nil
	}
	id := st.sess.Identity()
	if st.sess.SecurityLayer() != nil {
		return nil, s.failed(ctx, c, st, &Error{Reason: ReasonSecurityLayer, Mechanism: st.mech})
	}
	if err := s.authorize(ctx, id); err != nil {
		return nil, s.failed(ctx, c, st, err)
	}
	st.sess = nil
	if c.Authenticated() { // the transport's identity, while Authorize ran
		return nil, rpc.NewError(frame.CodeAuthFailed, "authentication failed: already authenticated")
	}
	s.log.Debug("virtrpc: sasl: authenticated", "remote", c.NetConn().RemoteAddr(), "identity", id.String())
	c.AuthenticateAs(id)
	return mustMarshal(&SASLReply{Complete: 1, Nil: nilFlag(challenge), Data: challenge}), nil
}

func (s *Server) authorize(ctx context.Context, id *Identity) error {
	if s.opts.Authorize != nil {
		if err := s.opts.Authorize(ctx, id); err != nil {
			return &Error{Reason: ReasonNotAllowed, Mechanism: id.Mechanism, Err: err}
		}
		return nil
	}
	if id.AuthzID != "" && id.AuthzID != id.Username {
		return fail(ReasonNotAllowed, id.Mechanism, "%q may not act as %q", id.Username, id.AuthzID)
	}
	return nil
}

// failed counts a failed attempt, ends the session and returns the error
// reply: libvirt's VIR_ERR_AUTH_FAILED, with the reason in str2. After
// MaxFailures the connection is shut down once the reply is written.
func (s *Server) failed(ctx context.Context, c *rpc.Conn, st *serverConn, err error) error {
	var se *Error
	if !errors.As(err, &se) {
		se = &Error{Mechanism: st.mech, Err: err}
	}
	st.sess, st.mech = nil, ""
	st.failures++
	reason := se.Reason
	msg := se.Error()
	if st.failures >= s.opts.MaxFailures {
		reason = ReasonTooManyAttempts
		msg = fmt.Sprintf("%s; %v (%d), closing the connection", msg, ErrTooManyAttempts, st.failures)
		if !st.closing {
			st.closing = true
			go func() { // after this handler's reply is written
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = c.Shutdown(ctx)
			}()
		}
	}
	s.log.Info("virtrpc: sasl: authentication failed", "remote", c.NetConn().RemoteAddr(), "err", msg)
	if d := s.opts.FailureDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done(): // the connection closed
			t.Stop()
		}
	}
	if s.opts.ConcealReasons {
		msg = "authentication failed"
		if reason != ReasonTooManyAttempts {
			reason = ReasonUnknown
		}
	}
	e := rpc.NewError(frame.CodeAuthFailed, "%s", strings.TrimPrefix(msg, "sasl: "))
	marker := reasonMarker + reason.String()
	e.Str2 = &marker
	return e
}

// openAs opens c's gate as id unless something else authenticated c
// first (SASL, or the other transport identity), and returns the identity
// in force: once the gate is open, who the peer is never changes.
func (s *Server) openAs(c *rpc.Conn, id *Identity) *Identity {
	st := s.state(c)
	st.mu.Lock()
	defer st.mu.Unlock()
	if c.Authenticated() {
		return IdentityOf(c)
	}
	c.AuthenticateAs(id)
	return id
}

func mustMarshal(v any) []byte {
	b, err := xdr.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sasl: encoding %T: %v", v, err)) // our own fixed types
	}
	return b
}
