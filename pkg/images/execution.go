package images

import (
	"regexp"
	"strings"
	"time"
)

// Step Functions execution names of the reboot-wave workflow. The backup
// function starts one execution per policy and slot under this name, so a
// second delivery of the same schedule (Scheduler and EventBridge deliver
// at least once) or a Lambda retry of the backup function cannot start a
// second run: StartExecution with the name of a running execution and the
// same input answers that execution, and the name of a closed one (kept 90
// days) or different input answers ExecutionAlreadyExists
// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html).
//
// The slot is in TimeLayout, without ':': an execution name is 1-80
// characters and must not contain white space, brackets, wildcards, control
// characters or any of " # % \ ^ | ~ ` $ & , ; : / (same page). Policy names
// are 1-32 of [a-z0-9-] (pkg/config), so a name is at most
// 32+1+16+len(DryRunSuffix) = 57 characters.

// MaxExecutionName is Step Functions' limit on an execution name.
const MaxExecutionName = 80

// DryRunSuffix ends the name of a dry run's execution: a dry run and the
// real run of a slot are different executions.
const DryRunSuffix = "-dry-run"

// ExecutionARN is the ARN of the execution named name of the state
// machine sm (name "": the prefix all its executions' ARNs share).
func ExecutionARN(sm, name string) string {
	return strings.Replace(sm, ":stateMachine:", ":execution:", 1) + ":" + name
}

// ExecutionName is the workflow execution's name for a policy's slot.
func ExecutionName(policy string, slot time.Time, dryRun bool) string {
	n := policy + "-" + slot.UTC().Format(TimeLayout)
	if dryRun {
		n += DryRunSuffix
	}
	return n
}

var executionRE = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*)-([0-9]{8}T[0-9]{6}Z)(` + DryRunSuffix + `)?$`)

// ParsedExecution is what a name made by ExecutionName says.
type ParsedExecution struct {
	Policy string
	Slot   time.Time
	DryRun bool
}

// ParseExecutionName reads a name made by ExecutionName; ok is false for
// any other name (an execution started by hand under another name).
func ParseExecutionName(name string) (ParsedExecution, bool) {
	m := executionRE.FindStringSubmatch(name)
	if m == nil {
		return ParsedExecution{}, false
	}
	slot, err := time.Parse(TimeLayout, m[2])
	if err != nil {
		return ParsedExecution{}, false
	}
	return ParsedExecution{Policy: m[1], Slot: slot, DryRun: m[3] != ""}, true
}
