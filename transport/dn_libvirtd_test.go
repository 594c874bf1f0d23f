package transport_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/internal/libvirtd"
	"github.com/virtrpc/virtrpc/transport"
)

type rawATV struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// rawName encodes an RDN sequence of one attribute per RDN, each value a
// string of the given ASN.1 tag.
func rawName(t *testing.T, attrs ...any) []byte {
	var seq []any
	for i := 0; i < len(attrs); i += 3 {
		v := attrs[i+2].(string)
		atv := rawATV{Type: attrs[i].(asn1.ObjectIdentifier), Value: asn1.RawValue{Class: asn1.ClassUniversal, Tag: attrs[i+1].(int), Bytes: []byte(v)}}
		set, err := asn1.MarshalWithParams([]rawATV{atv}, "set")
		require.NoError(t, err)
		seq = append(seq, asn1.RawValue{FullBytes: set})
	}
	b, err := asn1.Marshal(seq)
	require.NoError(t, err)
	return b
}

var (
	oidC     = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidO     = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidCN    = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidL     = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidEmail = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidDC    = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	oidOther = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
)

// TestDNAsLibvirtdSeesIt: transport.DN gives, for a range of subjects
// (libvirt's usual C,ST,L,O,CN; escapes; UTF-8; IA5 EMAIL and DC, and one
// of the wrong type; an OID GnuTLS has no name for), exactly the DN a real
// libvirtd logs ("Peer DN is ..."), and a tls_allowed_dn_list pattern
// written for libvirtd admits the same client in both.
func TestDNAsLibvirtdSeesIt(t *testing.T) {
	libvirtd.Require(t)
	p := newPKI(t)
	dir := t.TempDir()
	require.NoError(t, p.WriteLibvirtDir(dir))
	subjects := []struct {
		name pkix.Name
		raw  []byte
	}{
		{name: pkix.Name{CommonName: "virtrpc-client", Organization: []string{"virtrpc"}}},
		{name: pkix.Name{Country: []string{"GB"}, Province: []string{"London"}, Locality: []string{"London"}, Organization: []string{"Red Hat"}, CommonName: "client1"}},
		{name: pkix.Name{CommonName: `José, "Jr" <a+b>; \x`, OrganizationalUnit: []string{" #lead", "trail "}}},
		{raw: rawName(t, oidC, asn1.TagPrintableString, "DE", oidDC, asn1.TagIA5String, "example", oidCN, asn1.TagUTF8String, "c",
			oidEmail, asn1.TagIA5String, "x@example.com", oidL, asn1.TagBMPString, "\x00B\x00e\x00r\x00l\x00i\x00n")},
		{raw: rawName(t, oidEmail, asn1.TagUTF8String, "x@example.com", oidOther, asn1.TagUTF8String, "v", oidO, asn1.TagUTF8String, "o")},
	}
	d := libvirtd.Start(t, &libvirtd.Options{TLSDir: dir, AllowedDNs: []string{"nomatch"}, LogFilters: "1:rpc.nettlscontext"})
	var want []string
	for _, s := range subjects {
		cert, err := p.IssueClient(s.name, s.raw)
		require.NoError(t, err)
		want = append(want, transport.DN(cert.Leaf))
		cfg := p.ClientConfig()
		cfg.Certificates = []tls.Certificate{cert}
		nc, err := transport.DialTLS(testCtx(t), "tcp", d.TLSAddr, &transport.TLSOptions{Config: cfg, LibvirtAck: true})
		require.Error(t, err, "refused: nothing matches 'nomatch'")
		if nc != nil {
			nc.Close()
		}
	}
	re := regexp.MustCompile(`Peer DN is (.*)`)
	var got []string
	require.Eventually(t, func() bool {
		got = nil
		for _, m := range re.FindAllStringSubmatch(d.LogText(), -1) {
			got = append(got, m[1])
		}
		return len(got) == len(want)
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, want, got)

	// The same pattern, in libvirtd and in AllowDNs.
	pattern := "O=virtrpc,CN=virtrpc-*"
	d2 := libvirtd.Start(t, &libvirtd.Options{TLSDir: dir, AllowedDNs: []string{pattern}})
	cfg := p.ClientConfig()
	nc, err := transport.DialTLS(testCtx(t), "tcp", d2.TLSAddr, &transport.TLSOptions{Config: cfg, LibvirtAck: true})
	require.NoError(t, err, "libvirtd admits the client")
	nc.Close()
	require.NoError(t, transport.AllowDNs([]string{pattern})(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{p.Client.Leaf}}}))
}
