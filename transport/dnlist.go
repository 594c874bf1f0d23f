package transport

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/virtrpc/virtrpc/internal/glob"
)

// ErrDNNotAllowed is matched by the error a server's handshake fails with
// when the client certificate's subject is not on the allow-list
// (TLSOptions.AllowedDNs); the error names the DN.
var ErrDNNotAllowed = errors.New("client certificate DN not allowed")

// DNError is the refusal of a client certificate's distinguished name.
type DNError struct {
	DN string // the subject as libvirtd writes it (see [DN]: "O=...,CN=...")
}

func (e *DNError) Error() string { return fmt.Sprintf("transport: %v: %q", ErrDNNotAllowed, e.DN) }

// Unwrap returns ErrDNNotAllowed.
func (e *DNError) Unwrap() error { return ErrDNNotAllowed }

// AllowDNs returns a tls.Config.VerifyConnection function that accepts a
// client only if the subject DN of its verified certificate matches one of
// patterns, as libvirtd's tls_allowed_dn_list does: '*' matches any run of
// characters (commas included), '?' any one character, everything else
// itself, over the whole DN as libvirtd writes it ([DN]: the certificate's
// order, "O=virtrpc,CN=*"), so patterns from a libvirtd.conf work as they
// are. An empty list allows nobody. A refusal is a *DNError naming the DN.
func AllowDNs(patterns []string) func(tls.ConnectionState) error {
	pats := append([]string(nil), patterns...)
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return fmt.Errorf("transport: %w: no verified client certificate", ErrDNNotAllowed)
		}
		dn := DN(cs.VerifiedChains[0][0])
		if glob.Any(pats, dn) {
			return nil
		}
		return &DNError{DN: dn}
	}
}

// withAllowedDNs adds the allow-list check to cfg (already a clone), after
// any VerifyConnection of its own.
func withAllowedDNs(cfg *tls.Config, patterns []string) {
	if patterns == nil {
		return
	}
	check := AllowDNs(patterns)
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return check(cs)
	}
}
