// Package glob matches libvirt's access-list patterns (tls_allowed_dn_list,
// sasl_allowed_username_list): GLib's g_pattern_match_simple, '*' for any
// run of characters and '?' for any one, no escapes, no classes.
package glob

// Match reports whether s matches pattern as a whole. It is iterative
// with one backtrack point, so linear in practice and never exponential.
func Match(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
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
