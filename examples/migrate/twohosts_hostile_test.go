package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/rpc"
	"github.com/virtrpc/virtrpc/rpc/migrate"
)

// A -listen destination serves one migration. Before MaxIncoming 1, a
// second peer's Prepare while the first migration ran was served too: the
// memory driver's digest restarted (the first migration then failed its
// check), and the second's own failure could end the destination.
func TestListenRefusesASecondMigration(t *testing.T) {
	pki := t.TempDir()
	a, dout, dstErr := startDestination(t, config{listen: "127.0.0.1:0", pki: pki})
	ctx := context.Background()
	scfg := config{connect: a, pki: pki, transport: "tls"}
	cr, err := sourceCreds(scfg)
	require.NoError(t, err)
	dial := func() *rpc.Conn { // a source over real TLS, as -connect's
		c, err := connectSource(ctx, scfg, cr, a, io.Discard)
		require.NoError(t, err)
		return c
	}
	type stream struct {
		Name   string
		Size   int64
		Sparse bool
	}
	prepare := func(c *rpc.Conn, id string) error {
		args := struct {
			ID      string
			Cookie  []byte
			Streams []stream
		}{id, []byte("c"), []stream{{Name: "memory", Size: 1 << 20}}}
		var ret struct{ Cookie []byte }
		return c.CallXDR(ctx, migrate.ProcPrepare, args, &ret)
	}
	first, second := dial(), dial()
	defer second.Close()
	require.NoError(t, prepare(first, guestName))
	err = prepare(second, "intruder")
	require.ErrorContains(t, err, "1 migrations are already incoming (ReceiverOptions.MaxIncoming)")

	require.NoError(t, first.Close())
	select {
	case err := <-dstErr:
		require.ErrorContains(t, err, "connection to the source lost")
	case <-time.After(60 * time.Second):
		t.Fatalf("the destination never ended\n%s", dout)
	}
}
