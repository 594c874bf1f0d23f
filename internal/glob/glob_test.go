package glob

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		ok   bool
	}{
		{"", "", true}, {"*", "", true}, {"*", "anything,at=all", true},
		{"fred", "fred", true}, {"fred", "freddy", false}, {"fr?d", "fred", true},
		{"f*d", "fred", true}, {"f*d", "fredx", false}, {"*@EXAMPLE.COM", "fred@EXAMPLE.COM", true},
		{"CN=*,O=virtrpc", "CN=a,OU=b,O=virtrpc", true}, {"a*b*c", "abxc", true}, {"a*b*c", "acb", false},
		{"?", "", false}, {"**", "x", true},
	} {
		assert.Equal(t, tc.ok, Match(tc.p, tc.s), "%q %q", tc.p, tc.s)
	}
}

func TestMatchIsNotExponential(t *testing.T) {
	p := strings.Repeat("*a", 30) + "b"
	s := strings.Repeat("a", 5000)
	start := time.Now()
	assert.False(t, Match(p, s))
	assert.Less(t, time.Since(start), time.Second)
}

func FuzzMatch(f *testing.F) {
	f.Add("*a?b*", "xxaybzz")
	f.Fuzz(func(t *testing.T, p, s string) {
		if Match(p, s) && !strings.ContainsAny(p, "*?") && p != s {
			t.Fatalf("%q matched %q without wildcards", p, s)
		}
		if !Match(s, s) && !strings.ContainsAny(s, "*?") {
			t.Fatalf("%q does not match itself", s)
		}
	})
}

// TestQuestionMarkIsOneCharacter: as in GLib's g_pattern_match_simple, '?'
// matches one character, not one byte, so a DN or user name with UTF-8 in
// it matches the pattern its owner wrote.
func TestQuestionMarkIsOneCharacter(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		ok   bool
	}{
		{"CN=Jos?,O=x", "CN=José,O=x", true},
		{"CN=Jos??,O=x", "CN=José,O=x", false},
		{"?", "é", true}, {"??", "é", false}, {"*é", "ééé", true}, {"*?é", "é", false},
		{"a?c", "a\xffc", true}, // a byte that is not UTF-8 is one character
		{"\xff", "\xef\xbf\xbd", false},
		{"\xef\xbf\xbd", "\xff", false}, // U+FFFD written out is not any bad byte
		{"*本?", "日本語", true}, {"*日?", "日本語", false}, {"日*語", "日本語", true}, {"日?", "日本語", false},
	} {
		assert.Equal(t, tc.ok, Match(tc.p, tc.s), "%q %q", tc.p, tc.s)
	}
}
