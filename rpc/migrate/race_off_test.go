//go:build !race

package migrate_test

const (
	limitRate, limitSize      = 50e6, 256 << 20
	changeBefore, changeAfter = 40e6, 15e6
	changeSize                = 80 << 20
)
