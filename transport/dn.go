package transport

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"strings"
	"unicode/utf16"
)

// DN returns cert's subject distinguished name as libvirtd sees it
// (GnuTLS's gnutls_x509_crt_get_dn, what virt-pki-query-dn prints and
// tls_allowed_dn_list patterns are written against): the attributes in
// the certificate's own order, most general first ("O=virtrpc,CN=fred",
// where crypto/x509's Name.String says "CN=fred,O=virtrpc"), GnuTLS's
// attribute names (C, ST, L, O, OU, CN, EMAIL, DC, UID, ...), values
// escaped as RFC 4514 says, and a value whose type the attribute does not
// take (or an attribute GnuTLS has no name for, shown by its OID) as '#'
// and the hex of its DER.
func DN(cert *x509.Certificate) string {
	var rdns []rdnSET
	if rest, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil || len(rest) > 0 {
		return cert.Subject.String()
	}
	var b strings.Builder
	for i, rdn := range rdns {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, a := range rdn {
			if j > 0 {
				b.WriteByte('+')
			}
			at, known := dnAttrs[a.Type.String()]
			name := at.name
			if !known {
				name = a.Type.String()
			}
			b.WriteString(name)
			b.WriteByte('=')
			if s, ok := dnString(a.Value, at.kinds); known && ok {
				b.WriteString(escapeDN(s))
			} else {
				b.WriteByte('#')
				b.WriteString(hex.EncodeToString(a.Value.FullBytes))
			}
		}
	}
	return b.String()
}

type dnATV struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

type rdnSET []dnATV // a SET OF, for encoding/asn1 (by its name's suffix)

// String types an attribute takes.
const (
	directoryString = 1 << iota // X.520 DirectoryString: UTF8, Printable, Teletex, BMP, Universal
	ia5String
	printableString
)

var dnAttrs = map[string]struct {
	name  string
	kinds int
}{
	"2.5.4.6":                    {"C", printableString},
	"2.5.4.8":                    {"ST", directoryString},
	"2.5.4.7":                    {"L", directoryString},
	"2.5.4.10":                   {"O", directoryString},
	"2.5.4.11":                   {"OU", directoryString},
	"2.5.4.3":                    {"CN", directoryString},
	"2.5.4.9":                    {"STREET", directoryString},
	"2.5.4.17":                   {"PostalCode", directoryString},
	"2.5.4.5":                    {"serialNumber", printableString},
	"2.5.4.12":                   {"title", directoryString},
	"2.5.4.4":                    {"surName", directoryString},
	"2.5.4.42":                   {"givenName", directoryString},
	"2.5.4.43":                   {"initials", directoryString},
	"2.5.4.44":                   {"generationQualifier", directoryString},
	"2.5.4.46":                   {"dnQualifier", printableString},
	"2.5.4.65":                   {"pseudonym", directoryString},
	"0.9.2342.19200300.100.1.25": {"DC", ia5String},
	"0.9.2342.19200300.100.1.1":  {"UID", directoryString},
	"1.2.840.113549.1.9.1":       {"EMAIL", ia5String},
}

// dnString decodes v if it is a string of a type in kinds.
func dnString(v asn1.RawValue, kinds int) (string, bool) {
	if v.Class != asn1.ClassUniversal {
		return "", false
	}
	switch {
	case v.Tag == asn1.TagIA5String && kinds&ia5String != 0,
		v.Tag == asn1.TagPrintableString && kinds&(printableString|directoryString) != 0,
		v.Tag == asn1.TagUTF8String && kinds&directoryString != 0,
		v.Tag == asn1.TagT61String && kinds&directoryString != 0:
		return string(v.Bytes), true
	case v.Tag == asn1.TagBMPString && kinds&directoryString != 0 && len(v.Bytes)%2 == 0:
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
		}
		return string(utf16.Decode(u)), true
	}
	return "", false
}

// escapeDN escapes an attribute value as RFC 4514 section 2.4 says.
func escapeDN(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' || c == ';',
			c == '#' && i == 0, c == ' ' && (i == 0 || i == len(s)-1):
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
