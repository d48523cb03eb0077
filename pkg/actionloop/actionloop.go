// Package actionloop holds the contract of the action loop that both
// workflows (the reboot waves' rollout and the restore verification) are
// built from (infra/stacks loop.go): the settings of its Lambda tasks.
// The stacks build the tasks from these, and pkg/verify derives its sweep
// margin from them, so the two cannot drift apart.
package actionloop

import "time"

// A task's TimeoutSeconds is the function's own timeout,
// runner.FunctionTimeout (the local engine's default is 60 s).
const (
	// Retries: the Step and Cleanup tasks' retries on any error
	// (States.ALL), RetryInterval apart, doubling (RetryBackoff).
	Retries       = 3
	RetryInterval = 10 * time.Second
	RetryBackoff  = 2
	// LambdaServiceRetryBackoff: the CDK's retrier for Lambda service
	// exceptions (RetryOnServiceExceptions: 6 retries from 2 s, doubling:
	// 2+4+...+64 s). Those errors answer the invoke quickly (Lambda did
	// not run the function), so only their waits count.
	LambdaServiceRetryBackoff = (2 + 4 + 8 + 16 + 32 + 64) * time.Second
)

// RetryWaits is the sum of the waits between a task's retries (10+20+40 s).
func RetryWaits() time.Duration {
	d, sum := RetryInterval, time.Duration(0)
	for range Retries {
		sum += d
		d *= RetryBackoff
	}
	return sum
}
