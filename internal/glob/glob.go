// Package glob matches libvirt's access-list patterns (tls_allowed_dn_list,
// sasl_allowed_username_list): GLib's g_pattern_match_simple, '*' for any
// run of characters and '?' for any one, no escapes, no classes.
// Characters are UTF-8, as in GLib: '?' matches "é" whole; a byte that is
// not UTF-8 counts as one character and matches only itself.
package glob

import "unicode/utf8"

// next is the length of the character at the start of s (1 for a byte
// that is not UTF-8).
func next(s string) int {
	_, n := utf8.DecodeRuneInString(s)
	return n
}

// Match reports whether s matches pattern as a whole. It is iterative
// with one backtrack point, so O(len(pattern)·len(s)) at worst and never
// exponential.
func Match(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		sn := next(s[i:])
		switch {
		case p < len(pattern) && pattern[p] == '?':
			p++
			i += sn
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && next(pattern[p:]) == sn && pattern[p:p+sn] == s[i:i+sn]:
			p += sn
			i += sn
		case star >= 0:
			p = star + 1
			mark += next(s[mark:])
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Any reports whether s matches one of patterns.
func Any(patterns []string, s string) bool {
	for _, p := range patterns {
		if Match(p, s) {
			return true
		}
	}
	return false
}
