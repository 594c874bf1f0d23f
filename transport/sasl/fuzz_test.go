package sasl_test

import (
	"bytes"
	"errors"
	"regexp"
	"strconv"
	"testing"

	"github.com/virtrpc/virtrpc/transport/sasl"
)

// The fuzz targets feed a peer's messages to every parser: SCRAM's four
// messages (the server side parses client-first and client-final, the
// client side server-first and server-final), PLAIN, and the XDR of the
// auth procedures. Each must fail with an *sasl.Error or a wrapped
// ErrMalformed, never panic; seeds are in testdata/fuzz, taken from
// libvirt's capture 08 and this package's own exchanges.

func checkErr(t *testing.T, err error) {
	if err == nil {
		return
	}
	var se *sasl.Error
	if !errors.As(err, &se) && !errors.Is(err, sasl.ErrMalformed) {
		t.Fatalf("error of type %T without a reason: %v", err, err)
	}
}

func fuzzStore() *sasl.MemoryStore {
	s := &sasl.MemoryStore{}
	// A fixed verifier for fred/secret123 (salt "salt-of-16-bytes", 4096
	// iterations), so each input costs HMACs, not a PBKDF2.
	v, err := sasl.ParseVerifier(fuzzVerifier)
	if err != nil {
		panic(err)
	}
	s.Set(user, v)
	return s
}

var fuzzVerifier = func() string {
	v, err := sasl.NewVerifier(password, 4096)
	if err != nil {
		panic(err)
	}
	return v.String()
}()

func FuzzSCRAMServer(f *testing.F) {
	f.Add([]byte("n,,n=fred,r=S8gxx0sagZKrWS/+ZoVgwC8KFqXmBUvW"), []byte("c=biws,r=S8gxx0sagZKrWS/+ZoVgwC8KFqXmBUvWxxxx,p=AAAA"))
	f.Add([]byte("p=tls-exporter,,n=fred,r=abc"), []byte("c=cD10bHMtZXhwb3J0ZXIsLA==,r=abcdef,p=AAAA"))
	store := fuzzStore()
	f.Fuzz(func(t *testing.T, first, final []byte) {
		for _, m := range []sasl.ServerMechanism{sasl.SCRAMServer(store), sasl.SCRAMPlusServer(store)} {
			sess, err := m.Start(sasl.ConnState{Local: true})
			if err != nil {
				checkErr(t, err) // -PLUS without TLS
				continue
			}
			ch, done, err := sess.Step(first)
			checkErr(t, err)
			if err != nil || done {
				continue
			}
			// Replay the server's own nonce to reach the proof check.
			if m := regexp.MustCompile(`r=([^,]*)`).FindSubmatch(ch); m != nil {
				final = bytes.Replace(final, []byte("r=NONCE"), append([]byte("r="), m[1]...), 1)
			}
			_, done, err = sess.Step(final)
			checkErr(t, err)
			if done && sess.Identity() == nil {
				t.Fatal("done without an identity")
			}
		}
	})
}

var iterRE = regexp.MustCompile(`i=(\d+)`)

func FuzzSCRAMClient(f *testing.F) {
	f.Add([]byte("r=NONCEserver,s=c2FsdA==,i=4096"), []byte("v=COOxisg0Jshr/V5uLKno6dcbOg7kDxfXxA0vHDB+DSY="), true)
	f.Add([]byte("r=NONCE,s=,i=4096"), []byte("e=invalid-proof"), false)
	f.Fuzz(func(t *testing.T, serverFirst, serverFinal []byte, viaFinish bool) {
		if m := iterRE.FindSubmatch(serverFirst); m != nil {
			if n, err := strconv.Atoi(string(m[1])); err == nil && n > 8192 {
				return // valid but slow: the cap is tested in TestClientRefusesHugeIterationCounts
			}
		}
		sess, err := sasl.SCRAMSHA256(creds()).Start(sasl.ConnState{Local: true})
		if err != nil {
			t.Fatal(err)
		}
		first, err := sess.Step(nil)
		if err != nil {
			t.Fatal(err)
		}
		nonce := bytes.TrimPrefix(first[bytes.LastIndex(first, []byte("r=")):], []byte("r="))
		serverFirst = bytes.Replace(serverFirst, []byte("NONCE"), nonce, 1)
		if _, err := sess.Step(serverFirst); err != nil {
			checkErr(t, err)
			return
		}
		if viaFinish {
			err = sess.Finish(serverFinal)
		} else {
			_, err = sess.Step(serverFinal)
			if err == nil {
				err = sess.Finish(nil)
			}
		}
		checkErr(t, err)
		if err == nil {
			t.Fatalf("a server that does not know the password was believed: %q", serverFinal)
		}
	})
}

func FuzzPlain(f *testing.F) {
	f.Add([]byte("\x00fred\x00secret123"))
	f.Add([]byte("admin\x00fred\x00secret123"))
	f.Add([]byte("\x00\x00"))
	store := fuzzStore()
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, u, p, err := sasl.ParsePlain(msg)
		checkErr(t, err)
		sess, _ := sasl.PlainServer(store).Start(sasl.ConnState{Local: true})
		_, done, serr := sess.Step(msg)
		checkErr(t, serr)
		if done != (err == nil && u == user && p == password) {
			t.Fatalf("done=%v for %q", done, msg)
		}
	})
}

func FuzzAuthXDR(f *testing.F) {
	for _, p := range capturedAuth(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if mech, d, err := sasl.DecodeSASLStart(b); err == nil {
			if len(d) > sasl.MaxData || mech == "" {
				t.Fatalf("accepted %q with %d bytes", mech, len(d))
			}
		} else {
			checkErr(t, err)
		}
		if d, err := sasl.DecodeSASLStep(b); err == nil && len(d) > sasl.MaxData {
			t.Fatalf("accepted %d bytes", len(d))
		} else {
			checkErr(t, err)
		}
		_, _, err := sasl.DecodeSASLReply(b)
		checkErr(t, err)
		_, err = sasl.ParseMechList(string(b))
		checkErr(t, err)
	})
}
