package qemu_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc/migrate/qemu"
)

// fakeQMP is a QMP server: it greets, answers qmp_capabilities, and hands
// every other command to answer, on its own goroutine, which returns the
// lines to send (so replies may come out of order).
func fakeQMP(t *testing.T, answer func(cmd map[string]any) []any) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "qmp.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var mu sync.Mutex
		enc := json.NewEncoder(c)
		_ = enc.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 0}}}})
		dec := json.NewDecoder(c)
		for {
			var cmd map[string]any
			if dec.Decode(&cmd) != nil {
				return
			}
			if cmd["execute"] == "qmp_capabilities" {
				mu.Lock()
				_ = enc.Encode(map[string]any{"return": map[string]any{}, "id": cmd["id"]})
				mu.Unlock()
				continue
			}
			wg.Go(func() {
				lines := answer(cmd)
				mu.Lock()
				defer mu.Unlock()
				for _, l := range lines {
					_ = enc.Encode(l)
				}
			})
		}
	})
	return path
}

// Replies are matched to commands by id even when they come out of order,
// a command whose ctx ended does not take another's reply, and events are
// buffered while nobody reads them.
func TestQMPMatchesRepliesAndBuffersEvents(t *testing.T) {
	release := make(chan struct{})
	path := fakeQMP(t, func(cmd map[string]any) []any {
		name := cmd["execute"].(string)
		if name == "slow" {
			<-release
		}
		var lines []any
		for i := range 3 {
			lines = append(lines, map[string]any{"event": "TICK", "data": map[string]int{"n": i}})
		}
		if name == "fail" {
			return append(lines, map[string]any{"error": map[string]string{"class": "GenericError", "desc": "no"}, "id": cmd["id"]})
		}
		return append(lines, map[string]any{"return": map[string]string{"echo": name}, "id": cmd["id"]})
	})
	ctx := context.Background()
	c, err := qemu.Dial(ctx, path)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "7.2.0", c.Version.String())

	// A command that gives up on its reply.
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = c.Execute(sctx, "slow", nil, nil)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	var wg sync.WaitGroup
	for _, name := range []string{"a", "b", "c", "d"} {
		wg.Go(func() {
			var r struct{ Echo string }
			assert.NoError(t, c.Execute(ctx, name, nil, &r))
			assert.Equal(t, name, r.Echo)
		})
	}
	wg.Wait()
	close(release) // the slow reply arrives late and is dropped
	var r struct{ Echo string }
	require.NoError(t, c.Execute(ctx, "e", nil, &r))
	assert.Equal(t, "e", r.Echo)

	err = c.Execute(ctx, "fail", nil, nil)
	var qe *qemu.Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "GenericError", qe.Class)
	assert.True(t, strings.Contains(err.Error(), "fail"))

	// 7 commands with 3 events each, none read yet.
	for range 18 {
		ev, err := c.NextEvent(ctx)
		require.NoError(t, err)
		assert.Equal(t, "TICK", ev.Name)
	}
	assert.Zero(t, c.Dropped())
}
