package streamcore

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

// heldLink is a connection whose writer is stuck (a peer that reads
// slowly): scheduled frames stay in the stream's queue; frames sent ahead
// of data (SendFrame) are recorded.
type heldLink struct {
	mu  sync.Mutex
	oob []frame.Status
}

func (l *heldLink) Schedule(*Stream, bool) {}
func (l *heldLink) SendFrame(msg []byte) {
	h := frame.ParseHeader(msg)
	l.mu.Lock()
	l.oob = append(l.oob, h.Status)
	l.mu.Unlock()
}
func (l *heldLink) SendCredit(uint32, uint64, bool) {}
func (l *heldLink) Release(*Stream)                 {}

// Finish whose ctx ends, in both orders, for each sending role: what it
// reports is what the receiver can see.
func TestFinishCtxEndsBeforeOrAfterTheFinishIsWritten(t *testing.T) {
	finish := map[Role]frame.Status{Native: frame.StatusOK, CompatClient: frame.StatusOK, CompatServer: frame.StatusContinue}
	names := map[Role]string{Native: "native", CompatClient: "compat client", CompatServer: "compat server"}
	for _, role := range []Role{Native, CompatClient, CompatServer} {
		cfg := Config{Header: hdr, Send: true, Role: role, SendCredit: 1 << 20}
		t.Run(names[role]+"/still queued", func(t *testing.T) {
			l := &heldLink{}
			s := New(l, cfg)
			_, err := s.Write(make([]byte, 1000))
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err = s.Finish(ctx)
			require.ErrorIs(t, err, context.Canceled)
			assert.NotErrorIs(t, err, ErrOutcomeUnknown, "the finish never left: the abort is the outcome")
			f, more := s.PopFrame()
			assert.Empty(t, f.Bytes(), "data and finish dropped from the queue")
			assert.False(t, more)
			l.mu.Lock()
			defer l.mu.Unlock()
			require.NotEmpty(t, l.oob)
			assert.Equal(t, frame.StatusError, l.oob[len(l.oob)-1], "the peer is told of the abort instead")
			assert.Error(t, s.Close(), "the same outcome again: not a success")
		})
		t.Run(names[role]+"/written", func(t *testing.T) {
			l := &fakeLink{} // writes at once
			s := New(l, cfg)
			_, err := s.Write(make([]byte, 1000))
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err = s.Finish(ctx)
			require.ErrorIs(t, err, ErrOutcomeUnknown, "the finish is out: the receiver may have acknowledged")
			require.ErrorIs(t, err, context.Canceled)
			hs := l.frames(t)
			require.Len(t, hs, 3)
			assert.Equal(t, frame.StatusContinue, hs[0].Status, "data")
			assert.Equal(t, finish[role], hs[1].Status, "our finish")
			assert.Equal(t, frame.StatusError, hs[2].Status, "then the abort")
			assert.ErrorIs(t, s.Close(), ErrOutcomeUnknown, "the same outcome again")
		})
	}
}
