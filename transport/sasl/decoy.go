package sasl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
)

// A user the store does not know gets a decoy verifier, so that SCRAM
// answers the first message as for a real user (a salt, stable for the
// name, and the default iteration count) and fails only at the proof, and
// PLAIN spends the PBKDF2 a real check costs: with
// ServerOptions.ConcealReasons, neither the step at which an exchange
// fails nor its timing tells which user names exist. The decoy's keys are
// random, so no proof or password matches them. Users whose verifiers
// have more than MinIterations still stand out by their count.

var decoyKey = func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}()

// decoyVerifier is the verifier shown for an unknown user: its salt is an
// HMAC of the name under a per-process key (the same on every attempt).
func decoyVerifier(user string) Verifier {
	m := hmac.New(sha256.New, decoyKey)
	m.Write([]byte(user))
	sum := m.Sum(nil)
	keys := make([]byte, 64)
	_, _ = rand.Read(keys)
	return Verifier{Salt: sum[:16], Iterations: MinIterations, StoredKey: keys[:32], ServerKey: keys[32:]}
}
