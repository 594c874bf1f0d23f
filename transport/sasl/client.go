package sasl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/rpc"
)

// ClientOptions configure Authenticate. The zero value (or nil) offers no
// mechanism, so Mechanisms must be set (Password builds the usual list).
type ClientOptions struct {
	// Mechanisms the client may use, most preferred first; the first the
	// server offers and the transport allows is used. Nothing outside this
	// list is ever tried: a client that lists only SCRAMSHA256Plus fails
	// with ErrMechanismNotOffered rather than run plain SCRAM.
	Mechanisms []ClientMechanism
	// AllowInsecure lets PLAIN and SCRAM run over a connection that is
	// neither TLS nor a unix socket. Default false: they are refused with
	// ErrInsecureTransport, as libvirtd refuses them (it demands a SASL
	// security layer there, which neither has).
	AllowInsecure bool
	// AllowNone accepts a server whose AUTH_LIST says it needs no
	// authentication: Authenticate then returns a nil Identity. Default
	// false: that is an error matching ErrMechanismNotOffered.
	AllowNone bool
}

// Password returns the mechanisms for a user name and password, most
// preferred first: SCRAM-SHA-256-PLUS, then SCRAM-SHA-256. PLAIN is left
// out; add Plain(c) to the list for a server that has nothing else.
func Password(c Credentials) []ClientMechanism {
	return []ClientMechanism{SCRAMSHA256Plus(c), SCRAMSHA256(c)}
}

// maxSteps bounds the exchange: SCRAM needs two steps, no mechanism here
// more than three.
const maxSteps = 8

// Authenticate logs in on c, a connection to a libvirtd or a virtrpc server
// serving Server's procedures, with libvirt's exchange: AUTH_LIST,
// AUTH_SASL_INIT (the server's mechanisms), AUTH_SASL_START with the
// chosen mechanism's initial response, then AUTH_SASL_STEP until the
// server reports completion, whose data (SCRAM's server-final message)
// the mechanism verifies. It returns who the client authenticated as.
//
// On failure it closes c (a half-authenticated connection is of no use)
// and returns an *Error matching ErrAuthFailed and, when the reason is
// known, its sentinel (ErrWrongPassword, ErrChannelBinding, ...; a
// libvirtd says only "authentication failed", so its refusals carry no
// reason). ctx bounds the whole exchange.
func Authenticate(ctx context.Context, c *rpc.Conn, opts *ClientOptions) (*Identity, error) {
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	id, err := authenticate(ctx, c, &o)
	if err != nil {
		_ = c.Close()
		var se *Error
		if !errors.As(err, &se) {
			err = &Error{Err: err}
		}
		return nil, err
	}
	return id, nil
}

func authenticate(ctx context.Context, c *rpc.Conn, o *ClientOptions) (*Identity, error) {
	var list AuthListRet
	if err := c.CallXDR(ctx, proc(ProcAuthList), nil, &list); err != nil {
		return nil, remoteErr("", "AUTH_LIST", err)
	}
	if !slices.Contains(list.Types, AuthSASL) {
		if o.AllowNone && slices.Contains(list.Types, AuthNone) {
			return nil, nil
		}
		return nil, fail(ReasonMechanismNotOffered, "", "server's auth types are %v, not SASL (%d)", list.Types, AuthSASL)
	}
	var init SASLInitRet
	if err := c.CallXDR(ctx, proc(ProcAuthSASLInit), nil, &init); err != nil {
		return nil, remoteErr("", "AUTH_SASL_INIT", err)
	}
	offered, err := ParseMechList(init.Mechlist)
	if err != nil {
		return nil, &Error{Reason: ReasonMalformed, Err: err}
	}
	cs := StateOf(c.NetConn())
	cs.Offered = offered
	mech, err := choose(o, cs)
	if err != nil {
		return nil, err
	}
	name := mech.Name()
	// "y" (RFC 5802): the client could bind but the server did not offer
	// -PLUS. A client that saw -PLUS and chose plain SCRAM says "n".
	for _, m := range o.Mechanisms {
		if m.Name() == MechSCRAMSHA256Plus && !slices.Contains(offered, MechSCRAMSHA256Plus) {
			cs.clientCanBind = true
		}
	}
	sess, err := mech.Start(cs)
	if err != nil {
		return nil, err
	}
	resp, err := sess.Step(nil)
	if err != nil {
		return nil, err
	}
	if len(resp) > MaxData {
		return nil, fail(ReasonMalformed, name, "initial response of %d bytes, at most %d", len(resp), MaxData)
	}
	var reply []byte
	reply, err = c.Call(ctx, proc(ProcAuthSASLStart), mustMarshal(&SASLStartArgs{Mech: name, Nil: nilFlag(resp), Data: resp}))
	if err != nil {
		return nil, remoteErr(name, "AUTH_SASL_START", err)
	}
	for step := 0; ; step++ {
		complete, challenge, err := DecodeSASLReply(reply)
		if err != nil {
			return nil, &Error{Reason: ReasonMalformed, Mechanism: name, Err: err}
		}
		if complete {
			if err := sess.Finish(challenge); err != nil {
				return nil, err
			}
			break
		}
		if step == maxSteps {
			return nil, fail(ReasonMalformed, name, "no completion after %d steps", maxSteps)
		}
		if resp, err = sess.Step(challenge); err != nil {
			return nil, err
		}
		if len(resp) > MaxData {
			return nil, fail(ReasonMalformed, name, "response of %d bytes, at most %d", len(resp), MaxData)
		}
		reply, err = c.Call(ctx, proc(ProcAuthSASLStep), mustMarshal(&SASLStepArgs{Nil: nilFlag(resp), Data: resp}))
		if err != nil {
			return nil, remoteErr(name, "AUTH_SASL_STEP", err)
		}
	}
	if sess.SecurityLayer() != nil {
		return nil, &Error{Reason: ReasonSecurityLayer, Mechanism: name}
	}
	id := &Identity{Mechanism: name, ChannelBound: name == MechSCRAMSHA256Plus}
	if u, ok := mech.(interface{ username() string }); ok {
		id.Username = u.username()
	}
	return id, nil
}

func (p plainClient) username() string  { return p.c.Username }
func (s *scramClient) username() string { return s.creds.Username }

// choose picks the client's most preferred mechanism that the server
// offers and the transport allows.
func choose(o *ClientOptions, cs ConnState) (ClientMechanism, error) {
	if len(o.Mechanisms) == 0 {
		return nil, fail(ReasonMechanismNotOffered, "", "ClientOptions.Mechanisms is empty")
	}
	var insecure []string
	for _, m := range o.Mechanisms {
		if !slices.Contains(cs.Offered, m.Name()) {
			continue
		}
		if needsProtection(m.Name()) && !cs.Secure() && !o.AllowInsecure {
			insecure = append(insecure, m.Name())
			continue
		}
		return m, nil
	}
	if len(insecure) > 0 {
		return nil, fail(ReasonInsecureTransport, insecure[0], "plain TCP without TLS (ClientOptions.AllowInsecure is false)")
	}
	var mine []string
	for _, m := range o.Mechanisms {
		mine = append(mine, m.Name())
	}
	return nil, fail(ReasonMechanismNotOffered, "", "client wants %s, server offers %s", strings.Join(mine, ","), strings.Join(cs.Offered, ","))
}

// needsProtection reports whether a mechanism must not run in the clear.
func needsProtection(mech string) bool {
	return mech == MechPlain || strings.HasPrefix(mech, "SCRAM-")
}

// remoteErr turns a failed auth call into an *Error, with the reason a
// virtrpc server put in the error reply's str2.
func remoteErr(mech, call string, err error) error {
	var re *rpc.Error
	if errors.As(err, &re) && re.Code == frame.CodeAuthFailed {
		r := ReasonUnknown
		if re.Str2 != nil {
			if name, ok := strings.CutPrefix(*re.Str2, reasonMarker); ok {
				r = reasonNamed(name)
			}
		}
		return &Error{Reason: r, Mechanism: mech, Err: err}
	}
	return &Error{Mechanism: mech, Err: fmt.Errorf("%s: %w", call, err)}
}
