package rpc

import "sync/atomic"

type statCounters struct {
	bytesIn, bytesOut             atomic.Int64
	framesIn, framesOut           atomic.Int64
	streamBytesIn, streamBytesOut atomic.Int64
	streamsOpened                 atomic.Int64
	pingsOut                      atomic.Int64
	pingSent                      atomic.Int64 // unix nanos of an unanswered ping
	msgEnd, msgFrames             atomic.Int64 // bytesOut and framesOut after the last reply written
}

// Stats are a connection's counters since it started. A message counts as
// sent when it is handed to the connection's Write, and as received when its
// header has been read.
type Stats struct {
	BytesSent, BytesReceived             int64 // whole messages, headers included
	FramesSent, FramesReceived           int64
	StreamBytesSent, StreamBytesReceived int64 // stream data payload only
	StreamsOpen                          int   // streams registered now
	StreamsOpened                        int64
	CallsServing                         int   // calls received and not yet answered
	CallsPending                         int   // calls made and not yet answered (or given up on, until the reply)
	Memory                               int64 // bytes charged to the memory budget now (Options.ConnectionMemory)
	PingsSent                            int64
	Mode                                 Mode
	RTT                                  int64 // nanoseconds, the current estimate
}

// Stats returns a snapshot of the connection's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	open, pending := len(c.streams), len(c.pending)
	c.mu.Unlock()
	return Stats{
		BytesSent:           c.stats.bytesOut.Load(),
		BytesReceived:       c.stats.bytesIn.Load(),
		FramesSent:          c.stats.framesOut.Load(),
		FramesReceived:      c.stats.framesIn.Load(),
		StreamBytesSent:     c.stats.streamBytesOut.Load(),
		StreamBytesReceived: c.stats.streamBytesIn.Load(),
		StreamsOpen:         open,
		StreamsOpened:       c.stats.streamsOpened.Load(),
		CallsServing:        int(c.serving.Load()),
		CallsPending:        pending,
		Memory:              c.mem.inUse(),
		PingsSent:           c.stats.pingsOut.Load(),
		Mode:                c.Mode(),
		RTT:                 c.rttNanos.Load(),
	}
}
