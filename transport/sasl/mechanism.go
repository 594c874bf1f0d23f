package sasl

import (
	"crypto/tls"
	"crypto/x509"
	"net"
)

// Identity is who a peer authenticated as.
type Identity struct {
	// Mechanism is the SASL mechanism that authenticated the peer, for
	// example "SCRAM-SHA-256-PLUS" or "EXTERNAL".
	Mechanism string
	// Username is the authentication identity: the SASL user name, or for
	// EXTERNAL the subject DN of the verified TLS client certificate, as
	// libvirtd writes it (transport.DN: "O=virtrpc,CN=fred").
	Username string
	// AuthzID is the authorization identity the client asked for, if any
	// (PLAIN and SCRAM carry one, EXTERNAL's initial response is one).
	AuthzID string
	// ChannelBound says the exchange was bound to the TLS channel
	// (SCRAM-SHA-256-PLUS), so no TLS-terminating relay stood between the
	// peers.
	ChannelBound bool
}

// String returns the user name, with the mechanism.
func (id *Identity) String() string {
	if id == nil {
		return "<anonymous>"
	}
	return id.Username + " (" + id.Mechanism + ")"
}

// ConnState is what a mechanism may know of the connection it runs on.
type ConnState struct {
	// TLS is the connection's TLS state after its handshake, nil without
	// TLS.
	TLS *tls.ConnectionState
	// Local is true on a unix socket.
	Local bool
	// Peer is the other process on a unix socket (Linux's SO_PEERCRED), nil
	// elsewhere. It is not behind TLS: over a unix socket carrying TLS it
	// is still the process that connected.
	Peer *PeerCred
	// ServerCertificate is the certificate this side presented, on the
	// server side (tls.ConnectionState does not say): the
	// tls-server-end-point channel binding of TLS 1.2 hashes it. Nil
	// leaves SCRAM-SHA-256-PLUS unavailable on TLS 1.2 servers.
	ServerCertificate *x509.Certificate
	// Offered is the mechanisms the server offers on this connection.
	Offered []string

	clientCanBind bool // the client would use -PLUS had the server offered it
}

// PeerCred is who is at the other end of a unix socket.
type PeerCred struct {
	UID, GID uint32
	PID      int32
}

// Secure reports whether the transport protects the exchange (TLS or a
// unix socket), as libvirtd's virNetServerClientIsSecure does.
func (s ConnState) Secure() bool { return s.TLS != nil || s.Local }

// StateOf returns what nc says about itself: its TLS state if it has one
// (a *tls.Conn, or anything with a ConnectionState method such as
// transport.LibvirtServerConn), and whether it is a unix socket.
func StateOf(nc net.Conn) ConnState {
	var s ConnState
	if t, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		st := t.ConnectionState()
		if st.HandshakeComplete {
			s.TLS = &st
		}
	}
	if a := nc.RemoteAddr(); a != nil && (a.Network() == "unix" || a.Network() == "unixpacket") {
		s.Local = true
	} else if a := nc.LocalAddr(); a != nil && a.Network() == "unix" {
		s.Local = true
	}
	if s.Local {
		s.Peer = peerCred(nc)
	}
	return s
}

// ClientMechanism is the client side of one SASL mechanism.
type ClientMechanism interface {
	// Name is the mechanism's IANA name, as listed in AUTH_SASL_INIT.
	Name() string
	// Start begins a conversation on a connection.
	Start(cs ConnState) (ClientSession, error)
}

// ClientSession is one client conversation. The exchange calls Step(nil)
// for the initial response, then Step with each challenge of a reply that
// is not complete, and Finish once the server says the exchange is complete.
type ClientSession interface {
	// Step returns the response to challenge (nil for the initial
	// response). A nil response is sent as "no data", an empty one as
	// empty data: SASL tells them apart.
	Step(challenge []byte) (response []byte, err error)
	// Finish takes the data of the server's completing reply (nil if it
	// had none; SCRAM's server-final message rides there) and verifies the
	// server; an error means the server did not prove itself.
	Finish(final []byte) error
	// SecurityLayer is the layer the mechanism negotiated, or nil.
	SecurityLayer() SecurityLayer
}

// ServerMechanism is the server side of one SASL mechanism.
type ServerMechanism interface {
	// Name is the mechanism's IANA name.
	Name() string
	// Available reports whether the mechanism can run on the connection
	// (SCRAM-SHA-256-PLUS needs TLS, EXTERNAL a verified client
	// certificate); unavailable mechanisms are not offered.
	Available(cs ConnState) bool
	// Start begins a conversation on a connection.
	Start(cs ConnState) (ServerSession, error)
}

// ServerSession is one server conversation.
type ServerSession interface {
	// Step takes the client's data (nil when it sent none) and returns the
	// challenge (nil for none) and whether the client is now authenticated.
	// A failure is an *Error naming its Reason.
	Step(response []byte) (challenge []byte, done bool, err error)
	// Identity is who authenticated, once Step reported done.
	Identity() *Identity
	// SecurityLayer is the layer the mechanism negotiated, or nil.
	SecurityLayer() SecurityLayer
}

// SecurityLayer is the hook for mechanisms that protect the byte stream
// after the final step (GSSAPI with confidentiality). None of this package's
// mechanisms has one; the rpc connection cannot switch to one yet, so the
// exchange fails with ErrSecurityLayer when a mechanism returns one.
type SecurityLayer interface {
	// SSF is the layer's strength in bits, as SASL counts it (56 and
	// more is what libvirtd demands over plain TCP).
	SSF() int
	// Wrap returns the connection that carries the protected stream.
	Wrap(nc net.Conn) (net.Conn, error)
}
