package sasl

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xdg-go/scram"
)

// MinIterations is the least PBKDF2 iteration count a verifier may have
// (RFC 7677's minimum for SCRAM-SHA-256); clients refuse fewer.
const MinIterations = 4096

// Verifier is what a server keeps of a SCRAM-SHA-256 password (RFC 5802):
// never the password itself. PLAIN is checked against it too.
type Verifier struct {
	Salt       []byte
	Iterations int
	StoredKey  []byte // H(HMAC(SaltedPassword, "Client Key"))
	ServerKey  []byte // HMAC(SaltedPassword, "Server Key")
}

// NewVerifier derives a verifier from password (SASLprep'd, as SCRAM
// clients do) with a fresh 16-byte salt. iterations 0 means MinIterations;
// fewer than MinIterations, or more than MaxIterations (which this
// package's client refuses to compute), is an error.
func NewVerifier(password string, iterations int) (Verifier, error) {
	if iterations == 0 {
		iterations = MinIterations
	}
	if iterations < MinIterations {
		return Verifier{}, fmt.Errorf("sasl: %d iterations: at least %d", iterations, MinIterations)
	}
	if iterations > MaxIterations {
		return Verifier{}, fmt.Errorf("sasl: %d iterations: at most %d (MaxIterations, what clients compute)", iterations, MaxIterations)
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return verifierFor(password, salt, iterations)
}

func verifierFor(password string, salt []byte, iterations int) (Verifier, error) {
	c, err := scram.SHA256.NewClient("user", password, "")
	if err != nil {
		return Verifier{}, fmt.Errorf("sasl: password: %w", err)
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return Verifier{}, fmt.Errorf("sasl: deriving the verifier: %w", err)
	}
	return Verifier{Salt: salt, Iterations: iterations, StoredKey: sc.StoredKey, ServerKey: sc.ServerKey}, nil
}

// check reports whether password matches v, in constant time.
func (v Verifier) check(password string) bool {
	w, err := verifierFor(password, v.Salt, v.Iterations)
	return err == nil && hmac.Equal(w.StoredKey, v.StoredKey)
}

// String is RFC 5803's form: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
func (v Verifier) String() string {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", v.Iterations, b64(v.Salt), b64(v.StoredKey), b64(v.ServerKey))
}

// ParseVerifier parses what String returns.
func ParseVerifier(s string) (Verifier, error) {
	bad := func(why string) (Verifier, error) {
		return Verifier{}, fmt.Errorf("sasl: verifier %.40q: %s", s, why)
	}
	rest, ok := strings.CutPrefix(s, "SCRAM-SHA-256$")
	if !ok {
		return bad("not SCRAM-SHA-256$...")
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return bad("no '$' before the keys")
	}
	iters, salt64, ok1 := strings.Cut(params, ":")
	stored64, server64, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return bad("want iterations:salt$StoredKey:ServerKey")
	}
	var v Verifier
	var err error
	if v.Iterations, err = strconv.Atoi(iters); err != nil || v.Iterations < MinIterations || v.Iterations > MaxIterations {
		return bad(fmt.Sprintf("iterations %q: want %d to %d (MaxIterations)", iters, MinIterations, MaxIterations))
	}
	dec := base64.StdEncoding.DecodeString
	if v.Salt, err = dec(salt64); err != nil || len(v.Salt) == 0 {
		return bad("salt is not base64")
	}
	if v.StoredKey, err = dec(stored64); err != nil || len(v.StoredKey) != 32 {
		return bad("StoredKey is not 32 bytes of base64")
	}
	if v.ServerKey, err = dec(server64); err != nil || len(v.ServerKey) != 32 {
		return bad("ServerKey is not 32 bytes of base64")
	}
	return v, nil
}

// CredentialStore looks up users' verifiers for the server side of SCRAM
// and PLAIN. Lookup of a user it does not know returns an error matching
// ErrUnknownUser. Implementations must be safe for concurrent use.
type CredentialStore interface {
	Lookup(user string) (Verifier, error)
}

// MemoryStore is a CredentialStore in memory. The zero value is empty and
// ready.
type MemoryStore struct {
	mu    sync.RWMutex
	users map[string]Verifier
}

// Set records user's verifier.
func (m *MemoryStore) Set(user string, v Verifier) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users == nil {
		m.users = map[string]Verifier{}
	}
	m.users[user] = v
}

// AddUser derives a verifier from password and records it.
func (m *MemoryStore) AddUser(user, password string) error {
	v, err := NewVerifier(password, 0)
	if err != nil {
		return err
	}
	m.Set(user, v)
	return nil
}

// Lookup returns user's verifier.
func (m *MemoryStore) Lookup(user string) (Verifier, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.users[user]
	if !ok {
		return Verifier{}, fmt.Errorf("%w %q", ErrUnknownUser, user)
	}
	return v, nil
}

// FileStore is a CredentialStore backed by a file of lines
// "user:SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey" (RFC 5803's
// form after the user name); blank lines and lines starting with '#' are
// skipped. The file is read again when its size or modification time
// changes or the file is replaced, so users added with AddUserToFile
// apply to the next authentication. The zero value is not usable: use OpenFileStore.
type FileStore struct {
	path string

	mu    sync.Mutex
	fi    os.FileInfo // of the file read, to tell a replaced one (AddUserToFile renames)
	mtime time.Time
	size  int64
	users map[string]Verifier
}

// OpenFileStore reads the file at path; it must exist (errors match
// fs.ErrNotExist) and parse.
func OpenFileStore(path string) (*FileStore, error) {
	s := &FileStore{path: path}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Lookup returns user's verifier, reading the file again if it changed. If
// the changed file cannot be read or does not parse (half written by an
// editor, or removed), the users read before stay in force: to lock
// everyone out, replace the file with an empty one.
func (s *FileStore) Lookup(user string) (Verifier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reloadLocked(); err != nil && s.users == nil {
		return Verifier{}, err
	}
	v, ok := s.users[user]
	if !ok {
		return Verifier{}, fmt.Errorf("%w %q (in %s)", ErrUnknownUser, user, s.path)
	}
	return v, nil
}

func (s *FileStore) reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *FileStore) reloadLocked() error {
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	if s.users != nil && os.SameFile(fi, s.fi) && fi.ModTime().Equal(s.mtime) && fi.Size() == s.size {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	users, err := parseCredentialFile(s.path, data)
	if err != nil {
		return err
	}
	s.users, s.fi, s.mtime, s.size = users, fi, fi.ModTime(), fi.Size()
	return nil
}

func parseCredentialFile(path string, data []byte) (map[string]Verifier, error) {
	users := map[string]Verifier{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, ver, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("sasl: %s:%d: want user:verifier", path, n)
		}
		v, err := ParseVerifier(ver)
		if err != nil {
			return nil, fmt.Errorf("sasl: %s:%d: %w", path, n, err)
		}
		users[user] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sasl: %s: %w", path, err)
	}
	return users, nil
}

// AddUserToFile sets user's password in the credential file at path (made,
// mode 0600, if absent), replacing the user's line if there is one, as
// saslpasswd2 -c does for a sasldb. The file is replaced atomically.
// iterations 0 means MinIterations.
func AddUserToFile(path, user, password string, iterations int) error {
	if user == "" || strings.ContainsAny(user, ":\n\r") || strings.TrimSpace(user) != user || user[0] == '#' {
		return fmt.Errorf("sasl: user name %q: must be non-empty, without ':', newlines, surrounding spaces or a leading '#' (a comment line)", user)
	}
	v, err := NewVerifier(password, iterations)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	var out bytes.Buffer
	for line := range strings.SplitSeq(string(old), "\n") {
		if u, _, _ := strings.Cut(strings.TrimSpace(line), ":"); line == "" || u == user {
			continue
		}
		out.WriteString(line + "\n")
	}
	fmt.Fprintf(&out, "%s:%s\n", user, v)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sasl-*")
	if err != nil {
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("sasl: credential file: %w", err)
	}
	return nil
}
