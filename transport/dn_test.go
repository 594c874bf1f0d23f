package transport_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/transport"
)

// TestDN: what libvirtd 9.0 (GnuTLS 3.7) logged as "Peer DN is" for these
// subjects; TestDNAsLibvirtdSeesIt checks more against the real daemon.
func TestDN(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name pkix.Name
		want string
	}{
		{pkix.Name{CommonName: "José, Jr", Organization: []string{"virtrpc"}, OrganizationalUnit: []string{"ops"},
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "x@example.com"},
				{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "example"}}},
			`O=virtrpc,OU=ops,CN=José\, Jr,EMAIL=#0c0d78406578616d706c652e636f6d,DC=#13076578616d706c65`},
		{pkix.Name{CommonName: "virtrpc-client", Organization: []string{"virtrpc"}}, "O=virtrpc,CN=virtrpc-client"},
	} {
		cert, err := p.IssueClient(tc.name, nil)
		require.NoError(t, err)
		assert.Equal(t, tc.want, transport.DN(cert.Leaf))
	}
}
