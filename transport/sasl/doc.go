// Package sasl authenticates virtrpc connections with SASL (RFC 4422), the
// way libvirt does: as calls of libvirt's remote program (AUTH_LIST 66,
// AUTH_SASL_INIT 67, AUTH_SASL_START 68, AUTH_SASL_STEP 69), in compat and
// native mode alike, so a virtrpc client logs into a real libvirtd and a
// virtrpc server takes libvirt's clients.
//
// # Mechanisms
//
//   - SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-256-PLUS, which binds the
//     exchange to the TLS channel: tls-exporter (RFC 9266) on TLS 1.3,
//     tls-server-end-point (RFC 5929) on TLS 1.2. A relay that terminates
//     TLS breaks the binding, so -PLUS fails through it with
//     ErrChannelBinding while plain SCRAM passes. libvirtd never offers
//     -PLUS (libvirt sets no channel binding in Cyrus SASL), so with a
//     libvirtd the client speaks plain SCRAM-SHA-256.
//   - PLAIN (RFC 4616), checked on the server against the SCRAM verifiers.
//   - EXTERNAL: the identity is the subject DN of the verified TLS client
//     certificate, or on a unix socket the client's uid (SO_PEERCRED).
//
// ServerOptions.TLSIdentity and UnixIdentity let the transport's own
// identity authenticate a connection without SASL, as libvirtd's
// auth_tls = "none" and auth_unix_rw = "none" do (AUTH_LIST then answers
// "none"); Authorize decides in every case.
//
// The client side is one call, [Authenticate], with mechanisms in order of
// preference ([Password] gives -PLUS then plain SCRAM); nothing outside the
// list is ever tried, so a client that asks only for -PLUS never
// downgrades. The server side is a [Server]: its handlers serve the four
// procedures, its [Server.Gate] is the rpc.AuthGate that holds every other
// call back ("authentication required") until a client has authenticated,
// [IdentityOf] tells handlers who it is, and a connection that fails
// ServerOptions.MaxFailures times is closed. rpc.Options.AuthTimeout and
// MaxUnauthenticated bound the rest.
//
// PLAIN and SCRAM run only over TLS or a unix socket unless the options
// explicitly allow otherwise: over plain TCP libvirtd demands a SASL
// security layer (SSF 56 and more), which neither has. The
// [SecurityLayer] hook is where a mechanism that has one (GSSAPI) will
// plug in; today an exchange that ends with a security layer fails with
// ErrSecurityLayer.
//
// # Credentials
//
// Servers keep SCRAM verifiers (salt, iteration count of at least 4096,
// StoredKey, ServerKey), never passwords, behind [CredentialStore]:
// [MemoryStore], or [FileStore] over a file of RFC 5803 lines that
// [AddUserToFile] (and the command examples/saslpasswd) maintains, as
// saslpasswd2 maintains a sasldb.
//
// # The wire
//
// The SASL data fields are XDR char arrays (char data<65536>): every byte
// takes four bytes on the wire. Each message says with its int nil whether
// it carries data at all, which SASL distinguishes from empty data; libvirtd
// sends SCRAM's server-final message inside the reply that says complete,
// and the client verifies it before it believes the server. Failures are
// libvirt's VIR_ERR_AUTH_FAILED (45) error replies; a virtrpc server adds
// the Reason in str2, so its client reports ErrWrongPassword,
// ErrUnknownUser and the rest (the server tells them apart, as SCRAM's own
// e=unknown-user does, unless ServerOptions.ConcealReasons makes it answer
// only "authentication failed", as libvirtd does).
//
// # Dependencies
//
// SCRAM is github.com/xdg-go/scram (v1.4.0): a small, maintained,
// dependency-light implementation with RFC 5802/7677 test vectors and
// channel binding (tls-exporter, tls-server-end-point), which a reviewer
// would rather see than hand-written SCRAM. This package adds only what it
// lacks: the tls-server-end-point hash of the server's own certificate on
// the server side (tls.ConnectionState does not carry it), and refusing a
// "p" flag on the mechanism without -PLUS (it does not know the mechanism
// name).
package sasl
