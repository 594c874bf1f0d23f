package qemu

import (
	"context"
	"fmt"
	"time"
)

// MigrationInfo is QEMU's own view of a migration (query-migrate).
type MigrationInfo struct {
	// Status: none, setup, active, completed, failed, cancelling,
	// cancelled, device, ...
	Status string `json:"status"`
	// TotalTime and Downtime are in milliseconds.
	TotalTime int64  `json:"total-time"`
	Downtime  int64  `json:"downtime"`
	ErrorDesc string `json:"error-desc"`
	RAM       struct {
		Transferred    int64   `json:"transferred"`
		Remaining      int64   `json:"remaining"`
		Total          int64   `json:"total"`
		DirtyPagesRate int64   `json:"dirty-pages-rate"`
		Mbps           float64 `json:"mbps"`
		DirtySyncCount int64   `json:"dirty-sync-count"`
		MultifdBytes   int64   `json:"multifd-bytes"`
	} `json:"ram"`
}

// QueryMigrate returns QEMU's migration status.
func (c *Client) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var mi MigrationInfo
	err := c.Execute(ctx, "query-migrate", nil, &mi)
	return mi, err
}

// QueryStatus returns the guest's run state: running, paused, postmigrate,
// inmigrate, prelaunch, ...
func (c *Client) QueryStatus(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := c.Execute(ctx, "query-status", nil, &st)
	return st.Status, err
}

// RAMSize returns the guest's base memory size in bytes.
func (c *Client) RAMSize(ctx context.Context) (int64, error) {
	var ms struct {
		Base int64 `json:"base-memory"`
	}
	err := c.Execute(ctx, "query-memory-size-summary", nil, &ms)
	return ms.Base, err
}

// setMigrationParams sets the multifd capability and the parameters a
// tunnelled migration needs on one side. channels 0 turns multifd off.
func (c *Client) setMigrationParams(ctx context.Context, channels int, maxBandwidth int64) error {
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "multifd", "state": channels > 0}}}
	if err := c.Execute(ctx, "migrate-set-capabilities", caps, nil); err != nil {
		return err
	}
	params := map[string]any{}
	if channels > 0 {
		params["multifd-channels"] = channels
	}
	if maxBandwidth > 0 {
		params["max-bandwidth"] = maxBandwidth
	}
	if len(params) == 0 {
		return nil
	}
	return c.Execute(ctx, "migrate-set-parameters", params, nil)
}

// waitMigration polls query-migrate until the migration is over (completed,
// failed or cancelled) and returns its last status.
func (c *Client) waitMigration(ctx context.Context, every time.Duration) (MigrationInfo, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		mi, err := c.QueryMigrate(ctx)
		if err != nil {
			return mi, err
		}
		switch mi.Status {
		case "completed":
			return mi, nil
		case "failed", "cancelled":
			return mi, fmt.Errorf("qemu migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return mi, fmt.Errorf("qemu migration still %s: %w", mi.Status, ctx.Err())
		case <-t.C:
		}
	}
}

// WaitMigration polls query-migrate every interval until the migration is
// over and returns its last status; an error if it failed, was cancelled,
// or ctx ended first. On a source, completed means the guest is paused
// (postmigrate) with all its state sent: the moment to compare its memory.
func (c *Client) WaitMigration(ctx context.Context, every time.Duration) (MigrationInfo, error) {
	return c.waitMigration(ctx, every)
}
