// Package logtest captures the JSON log lines of a run in tests and names
// the size limits they are checked against.
package logtest

import (
	"bytes"
	"strings"
	"sync"
)

// CloudWatchEventLimit is CloudWatch Logs' maximum event size: 256 KiB,
// including 26 bytes of overhead per event (PutLogEvents quotas).
const CloudWatchEventLimit = 256<<10 - 26

// LambdaResponseLimit is Lambda's maximum response (and errorMessage) size
// for synchronous invocations: 6 MB.
const LambdaResponseLimit = 6 << 20

// Buffer collects log output from concurrent workers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines are the log lines written so far.
func (b *Buffer) Lines() []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}
