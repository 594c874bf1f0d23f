package sasl_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

// BenchmarkConnectToFirstCall measures a client's connect (TLS handshake
// or unix dial, HELLO), authentication and first call answered, against a
// virtrpc server on loopback: what SCRAM adds to connecting. The -cold
// cases build a new mechanism per connection, so the client runs its
// PBKDF2 (4096 iterations) every time; the others reuse one, which caches
// it as a reconnecting client does.
//
//	go test -run XXX -bench ConnectToFirstCall -benchtime 200x ./transport/sasl/
func BenchmarkConnectToFirstCall(b *testing.B) {
	for _, tc := range []struct {
		name  string
		tls   bool
		mechs []sasl.ClientMechanism // nil: no authentication (no auth gate)
	}{
		{"tls", true, nil},
		{"tls+scram", true, []sasl.ClientMechanism{sasl.SCRAMSHA256(creds())}},
		{"tls+scram-cold", true, nil}, // a new mechanism value per connection: PBKDF2 each time
		{"tls+scram-plus", true, []sasl.ClientMechanism{sasl.SCRAMSHA256Plus(creds())}},
		{"unix", false, nil},
		{"unix+scram", false, []sasl.ClientMechanism{sasl.SCRAMSHA256(creds())}},
		{"unix+scram-cold", false, nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o := fixtureOpts{}
			if tc.tls {
				p := newPKI(b)
				o.network, o.tls, o.client = "tcp", p.ServerConfig(), p.ClientConfig()
				o.tls.MinVersion, o.client.MinVersion = tls.VersionTLS13, tls.VersionTLS13
			}
			cold := strings.HasSuffix(tc.name, "-cold")
			o.noGate = tc.mechs == nil && !cold
			f := startServer(b, o)
			b.ResetTimer()
			for b.Loop() {
				c := f.dial(b, nil)
				mechs := tc.mechs
				if cold {
					mechs = []sasl.ClientMechanism{sasl.SCRAMSHA256(creds())}
				}
				if mechs != nil {
					if _, err := sasl.Authenticate(testCtx(b), c, &sasl.ClientOptions{Mechanisms: mechs}); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := c.Call(testCtx(b), pingProc, nil); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}
