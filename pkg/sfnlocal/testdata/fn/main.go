// Command fn is a test-only Lambda function for pkg/sfnlocal: it echoes and
// transforms its input and fails on demand with custom error types, so the
// tests can drive a synthesized state machine's Retry, Catch and Map paths
// through a real Go bootstrap under the Lambda Runtime Interface Emulator.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"
)

// TransientError is a failure worth retrying; aws-lambda-go reports the
// type's name ("TransientError") as errorType.
type TransientError struct{ Attempt int }

func (e *TransientError) Error() string {
	return fmt.Sprintf("transient failure on attempt %d", e.Attempt)
}

// PermanentError is a failure a Catch should handle.
type PermanentError struct{ Reason string }

func (e *PermanentError) Error() string { return "permanent failure: " + e.Reason }

// Input drives the fixture.
type Input struct {
	// Value is doubled (role "prepare") or squared (role "square").
	Value int `json:"value"`
	// Index is echoed back (Map item index).
	Index int `json:"index"`
	// FailTimes makes the first FailTimes invocations with the same Key
	// fail with TransientError (counted in this process).
	FailTimes int    `json:"failTimes"`
	Key       string `json:"key"`
	// Permanent fails with PermanentError.
	Permanent string `json:"permanent"`
	// ErrorType fails with exactly this errorType (e.g. "Backup.Throttled").
	ErrorType string `json:"errorType"`
	// SleepMS delays the answer.
	SleepMS int `json:"sleepMs"`
	// Items is passed through by "prepare".
	Items []Input `json:"items"`
	// Skip is passed through by "prepare".
	Skip bool `json:"skip"`
	// Crash exits the process without answering.
	Crash bool `json:"crash"`
	// Pad adds this many bytes to the answer of "square".
	Pad int `json:"pad"`
}

var (
	mu       sync.Mutex
	attempts = map[string]int{}
)

func handle(_ context.Context, in Input) (map[string]any, error) {
	role := os.Getenv("FIXTURE_ROLE")
	// The sleep ignores the invocation's deadline, so a sleep past the
	// function timeout is ended by the RIE, not by the handler.
	time.Sleep(time.Duration(in.SleepMS) * time.Millisecond)
	if in.Crash {
		os.Exit(3)
	}
	if in.Permanent != "" {
		return nil, &PermanentError{Reason: in.Permanent}
	}
	if in.ErrorType != "" {
		return nil, messages.InvokeResponse_Error{Type: in.ErrorType, Message: "requested " + in.ErrorType}
	}
	if in.FailTimes > 0 {
		mu.Lock()
		attempts[in.Key]++
		n := attempts[in.Key]
		mu.Unlock()
		if n <= in.FailTimes {
			return nil, &TransientError{Attempt: n}
		}
	}
	switch role {
	case "prepare":
		return map[string]any{"value": in.Value * 2, "items": in.Items, "skip": in.Skip}, nil
	case "square":
		return map[string]any{"index": in.Index, "square": in.Value * in.Value, "pid": os.Getpid(), "pad": strings.Repeat("x", in.Pad)}, nil
	}
	return nil, fmt.Errorf("FIXTURE_ROLE %q is neither prepare nor square", role)
}

func main() { lambda.Start(handle) }
