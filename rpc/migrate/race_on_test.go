//go:build race

package migrate_test

// The race detector slows the stream code several times over, and CI runs
// packages side by side on two cores: the limit tests use lower rates so
// that the machine can keep up with the limit and the test checks the
// limiter, not the machine.
const (
	limitRate, limitSize      = 10e6, 48 << 20
	changeBefore, changeAfter = 10e6, 4e6
	changeSize                = 24 << 20
)
