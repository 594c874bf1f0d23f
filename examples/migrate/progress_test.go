package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// On a terminal the line is redrawn in place and ended once; anywhere
// else every draw is a whole line.
func TestProgressDraw(t *testing.T) {
	src := fixedTotal(100<<20, func() int64 { return 25 << 20 })
	var tty, log strings.Builder
	p := newProgress(&tty, true, "perform", src)
	p.draw(false)
	p.draw(false)
	p.draw(true)
	out := tty.String()
	assert.Equal(t, 3, strings.Count(out, "\r"), "%q", out)
	assert.True(t, strings.HasSuffix(out, "\n") && strings.Count(out, "\n") == 1, "%q", out)
	assert.Contains(t, out, "perform    25.0/100.0 MiB  25.0%")

	p = newProgress(&log, false, "perform", src)
	p.draw(false)
	p.draw(true)
	lines := strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n")
	assert.Len(t, lines, 2, "%q", log.String())
	assert.NotContains(t, log.String(), "\r")
	assert.False(t, isTerminal(&log))
}

// With multifd the total is QEMU's: RAM transferred plus remaining, the
// RAM size before QEMU first reports, never below what was sent.
func TestQEMUStatusEstimate(t *testing.T) {
	var q qemuStatus
	_, total := q.estimate(10, 1000)
	assert.Equal(t, int64(1000), total, "before QEMU reports")
	var mi qemu.MigrationInfo
	mi.RAM.Total, mi.RAM.Transferred, mi.RAM.Remaining = 1000, 600, 700 // the guest dirtied pages again
	q.set(mi)
	sent, total := q.estimate(610, 1000)
	assert.Equal(t, int64(610), sent)
	assert.Equal(t, int64(1300), total)
	mi.RAM.Transferred, mi.RAM.Remaining = 1300, 0
	q.set(mi)
	_, total = q.estimate(1400, 1000) // the tunnel counts QEMU's headers too
	assert.Equal(t, int64(1400), total)
}
