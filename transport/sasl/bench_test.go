package sasl_test

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/stream"
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

// BenchmarkStreamOverTLS moves 256 MiB over one stream on a TLS connection
// that authenticated with SCRAM-SHA-256-PLUS, and on one that did not
// authenticate: SCRAM has no security layer, so the two should not differ
// beyond noise.
//
//	go test -run XXX -bench StreamOverTLS -benchtime 3x -count 3 ./transport/sasl/
func BenchmarkStreamOverTLS(b *testing.B) {
	const size = 256 << 20
	sink := func(m *rpc.Mux) {
		m.Handle(sinkProc, func(ctx context.Context, req *rpc.Request) ([]byte, error) {
			st, err := req.Stream(stream.Upload, nil)
			if err != nil {
				return nil, err
			}
			go func() {
				if _, err := io.Copy(io.Discard, st); err == nil {
					_ = st.Close()
				}
			}()
			return nil, nil
		})
	}
	for _, auth := range []bool{false, true} {
		name := "tls"
		if auth {
			name = "tls+scram-plus"
		}
		b.Run(name, func(b *testing.B) {
			p := newPKI(b)
			f := startServer(b, fixtureOpts{network: "tcp", tls: p.ServerConfig(), client: p.ClientConfig(), noGate: !auth, extra: sink})
			c := f.dial(b, nil)
			if auth {
				if _, err := sasl.Authenticate(testCtx(b), c, &sasl.ClientOptions{Mechanisms: sasl.Password(creds())}); err != nil {
					b.Fatal(err)
				}
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				st, _, err := c.OpenStream(testCtx(b), sinkProc, nil, stream.Upload, nil)
				if err != nil {
					b.Fatal(err)
				}
				for n := 0; n < size; n += len(buf) {
					if _, err := st.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				if err := st.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var sinkProc = rpc.Procedure{Prog: 0x20008086, Vers: 1, Proc: 1001}
