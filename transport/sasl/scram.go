package sasl

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"

	"github.com/xdg-go/scram"
)

// SCRAMSHA256 returns the client side of SCRAM-SHA-256 (RFC 7677). If the
// client also asks for SCRAM-SHA-256-PLUS on a TLS connection whose server
// does not offer it, the client says so in its first message ("y"), so a
// server that does offer -PLUS detects a relay that stripped it.
func SCRAMSHA256(c Credentials) ClientMechanism { return newSCRAMClient(c, false) }

// SCRAMSHA256Plus returns the client side of SCRAM-SHA-256-PLUS: SCRAM
// bound to the TLS channel (tls-exporter on TLS 1.3, tls-server-end-point
// on TLS 1.2), so it fails with ErrChannelBinding when anything terminates
// TLS between client and server.
func SCRAMSHA256Plus(c Credentials) ClientMechanism { return newSCRAMClient(c, true) }

func newSCRAMClient(c Credentials, plus bool) *scramClient {
	return &scramClient{creds: c, plus: plus}
}

// scramClient keeps one xdg-go Client for all its conversations: it caches
// the PBKDF2 result per salt and iteration count, so reconnecting with the
// same mechanism value skips the expensive part.
type scramClient struct {
	creds Credentials
	plus  bool

	once   sync.Once
	client *scram.Client
	err    error
}

func (s *scramClient) Name() string {
	if s.plus {
		return MechSCRAMSHA256Plus
	}
	return MechSCRAMSHA256
}

func (s *scramClient) Start(cs ConnState) (ClientSession, error) {
	s.once.Do(func() {
		s.client, s.err = scram.SHA256.NewClient(s.creds.Username, s.creds.Password, s.creds.AuthzID)
		if s.err == nil {
			s.client = s.client.WithMinIterations(MinIterations)
		}
	})
	if s.err != nil {
		return nil, fail(ReasonMalformed, s.Name(), "credentials: %v", s.err)
	}
	c := s.client
	var conv *scram.ClientConversation
	switch {
	case s.plus:
		cb, err := channelBinding(cs, nil)
		if err != nil {
			return nil, &Error{Reason: ReasonChannelBinding, Mechanism: s.Name(), Err: err}
		}
		conv = c.NewConversationWithChannelBinding(cb)
	case cs.clientCanBind && cs.TLS != nil:
		conv = c.NewConversationAdvertisingChannelBinding()
	default:
		conv = c.NewConversation()
	}
	return &scramClientSession{name: s.Name(), conv: conv, plus: s.plus}, nil
}

type scramClientSession struct {
	name string
	conv *scram.ClientConversation
	plus bool
	step int
}

func (s *scramClientSession) Step(challenge []byte) ([]byte, error) {
	if s.step == 0 && len(challenge) > 0 {
		return nil, fail(ReasonMalformed, s.name, "server sent a challenge before the client-first message")
	}
	if s.step > 2 {
		return nil, fail(ReasonMalformed, s.name, "server sent more challenges than SCRAM has")
	}
	if s.step == 1 {
		if err := checkIterations(challenge); err != nil {
			return nil, &Error{Reason: ReasonMalformed, Mechanism: s.name, Err: err}
		}
	}
	s.step++
	out, err := s.conv.Step(string(challenge))
	if err != nil {
		return nil, s.clientErr(err)
	}
	return []byte(out), nil // the reply to a server-final is empty data
}

// MaxIterations is the most PBKDF2 iterations a client computes for a
// server (about a second's work): a server asking for more is refused
// rather than let it burn the client's CPU.
const MaxIterations = 1 << 20

// checkIterations refuses a server-first message asking for more than
// MaxIterations (xdg-go/scram checks the minimum only).
func checkIterations(serverFirst []byte) error {
	for f := range strings.SplitSeq(string(serverFirst), ",") {
		if v, ok := strings.CutPrefix(f, "i="); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n > MaxIterations {
				return fmt.Errorf("server-first message asks for %.12q iterations, at most %d", v, MaxIterations)
			}
		}
	}
	return nil
}

func (s *scramClientSession) Finish(final []byte) error {
	if final != nil && !s.conv.Done() {
		if s.step != 2 {
			return fail(ReasonMalformed, s.name, "server completed after %d of SCRAM's messages", s.step)
		}
		s.step++
		if _, err := s.conv.Step(string(final)); err != nil {
			return s.clientErr(err)
		}
	}
	if !s.conv.Valid() {
		return fail(ReasonServerNotVerified, s.name, "server reported success without a valid server-final message")
	}
	return nil
}

func (s *scramClientSession) clientErr(err error) error {
	msg := err.Error()
	switch {
	case msg == "server validation failed":
		return &Error{Reason: ReasonServerNotVerified, Mechanism: s.name, Err: err}
	case strings.Contains(msg, "channel-binding"), strings.Contains(msg, "channel binding"):
		return &Error{Reason: ReasonChannelBinding, Mechanism: s.name, Err: err}
	}
	return &Error{Reason: ReasonMalformed, Mechanism: s.name, Err: err}
}

func (*scramClientSession) SecurityLayer() SecurityLayer { return nil }

// SCRAMServer returns the server side of SCRAM-SHA-256 with verifiers
// from store. When SCRAM-SHA-256-PLUS is offered on the same connection, a
// client that says it could bind but saw no -PLUS ("y") is refused as a
// downgrade.
func SCRAMServer(store CredentialStore) ServerMechanism { return &scramServer{store: store} }

// SCRAMPlusServer returns the server side of SCRAM-SHA-256-PLUS, offered
// on TLS connections only (on TLS 1.2 only with ConnState.ServerCertificate
// set, for tls-server-end-point).
func SCRAMPlusServer(store CredentialStore) ServerMechanism {
	return &scramServer{store: store, plus: true}
}

type scramServer struct {
	store CredentialStore
	plus  bool
}

func (s *scramServer) Name() string {
	if s.plus {
		return MechSCRAMSHA256Plus
	}
	return MechSCRAMSHA256
}

func (s *scramServer) Available(cs ConnState) bool {
	if !s.plus {
		return true
	}
	_, err := channelBinding(cs, cs.ServerCertificate)
	return err == nil
}

func (s *scramServer) Start(cs ConnState) (ServerSession, error) {
	sess := &scramServerSession{name: s.Name(), plus: s.plus}
	lookup := func(user string) (scram.StoredCredentials, error) {
		v, err := s.store.Lookup(user)
		if errors.Is(err, ErrUnknownUser) { // fail at the proof, as a wrong password does
			sess.lookupErr = err
			v, err = decoyVerifier(user), nil
		}
		if err != nil {
			sess.lookupErr = err
			return scram.StoredCredentials{}, err
		}
		return scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations},
			StoredKey:  v.StoredKey,
			ServerKey:  v.ServerKey,
		}, nil
	}
	srv, err := scram.SHA256.NewServer(lookup)
	if err != nil {
		return nil, &Error{Mechanism: s.Name(), Err: err}
	}
	offersPlus := s.plus || contains(cs.Offered, MechSCRAMSHA256Plus)
	switch {
	case s.plus:
		cb, err := channelBinding(cs, cs.ServerCertificate)
		if err != nil {
			return nil, &Error{Reason: ReasonChannelBinding, Mechanism: s.Name(), Err: err}
		}
		sess.conv = srv.NewConversationWithChannelBindingRequired(cb)
	case offersPlus:
		cb, err := channelBinding(cs, cs.ServerCertificate)
		if err != nil {
			sess.conv = srv.NewConversation()
		} else {
			sess.conv = srv.NewConversationWithChannelBinding(cb)
		}
	default:
		sess.conv = srv.NewConversation()
	}
	return sess, nil
}

type scramServerSession struct {
	name      string
	plus      bool
	conv      *scram.ServerConversation
	lookupErr error
	step      int
	id        *Identity
}

func (s *scramServerSession) Step(resp []byte) ([]byte, bool, error) {
	if resp == nil {
		if s.step == 0 { // no initial response: an empty challenge asks for it
			return []byte{}, false, nil
		}
		return nil, false, fail(ReasonMalformed, s.name, "client sent no data")
	}
	if s.step == 0 {
		// RFC 5802: "p" on the mechanism without -PLUS is an error, whatever
		// the server supports; xdg-go cannot tell, it does not know our name.
		if !s.plus && strings.HasPrefix(string(resp), "p=") {
			return nil, false, fail(ReasonChannelBinding, s.name, "client asked for channel binding on %s", s.name)
		}
	}
	s.step++
	out, err := s.conv.Step(string(resp))
	if err != nil {
		return nil, false, s.serverErr(out, err)
	}
	if !s.conv.Done() {
		return []byte(out), false, nil
	}
	if !s.conv.Valid() {
		return nil, false, fail(ReasonWrongPassword, s.name, "")
	}
	s.id = &Identity{Mechanism: s.name, Username: s.conv.Username(), AuthzID: s.conv.AuthzID(), ChannelBound: s.plus}
	return []byte(out), true, nil // the server-final message rides on the completing reply
}

func (s *scramServerSession) serverErr(code string, err error) error {
	r := ReasonMalformed
	switch code {
	case scram.ErrInvalidProof:
		r = ReasonWrongPassword
		if errors.Is(s.lookupErr, ErrUnknownUser) { // the decoy's proof
			r, err = ReasonUnknownUser, s.lookupErr
			code = ""
		}
	case scram.ErrUnknownUser:
		r = ReasonUnknownUser
		if s.lookupErr != nil && !errors.Is(s.lookupErr, ErrUnknownUser) {
			r = ReasonUnknown // the store failed: not the client's fault
		}
	case scram.ErrChannelBindingsDontMatch, scram.ErrServerDoesSupportChannelBinding,
		scram.ErrChannelBindingNotSupported, scram.ErrUnsupportedChannelBindingType:
		r = ReasonChannelBinding
	}
	if code != "" {
		err = fmt.Errorf("%s: %w", code, err)
	}
	return &Error{Reason: r, Mechanism: s.name, Err: err}
}

func (s *scramServerSession) Identity() *Identity        { return s.id }
func (*scramServerSession) SecurityLayer() SecurityLayer { return nil }

// channelBinding is the binding of cs's TLS channel: tls-exporter on TLS
// 1.3 (RFC 9266); tls-server-end-point on TLS 1.2 (RFC 5929), hashing
// serverCert on the server side (nil on the client side: the certificate
// the server presented).
func channelBinding(cs ConnState, serverCert *x509.Certificate) (scram.ChannelBinding, error) {
	if cs.TLS == nil {
		return scram.ChannelBinding{}, errors.New("channel binding needs TLS")
	}
	if cs.TLS.Version >= tls.VersionTLS13 {
		return scram.NewTLSExporterBinding(cs.TLS)
	}
	if serverCert == nil {
		if len(cs.TLS.PeerCertificates) == 0 {
			return scram.ChannelBinding{}, errors.New("tls-server-end-point: no server certificate")
		}
		serverCert = cs.TLS.PeerCertificates[0]
	}
	var h hash.Hash
	switch serverCert.SignatureAlgorithm { // RFC 5929 section 4.1: MD5 and SHA-1 become SHA-256
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return scram.ChannelBinding{}, fmt.Errorf("tls-server-end-point: undefined for %v certificates", serverCert.SignatureAlgorithm)
	}
	h.Write(serverCert.Raw)
	return scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: h.Sum(nil)}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
