package streamcore

import "time"

const (
	testTimeout = 10 * time.Second
	tick        = time.Millisecond
)
