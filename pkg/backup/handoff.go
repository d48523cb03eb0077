package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// The hand-off to the reboot-wave workflow. The backup function is the one
// entry point of every policy's schedule and manual "Backup Requested"
// rule. A policy that reboots in waves (RebootsInWaves) is not backed up
// here: after the same input checks as every run, the trigger starts the
// workflow's execution named for the policy and slot
// (images.ExecutionName), with the trigger as its input.
//
// Why not let Scheduler or EventBridge start the execution: they deliver
// at least once, and neither can name the execution from the slot (the
// scheduled time, 2026-11-24T03:00:00Z, has ':', which execution names
// must not contain; a target sets no name at all), so a second delivery
// would start a second run. StartExecution with a deterministic name makes
// a repeated delivery, and Lambda's own retries of this function, start
// nothing new: the same name and input while the execution runs answers
// the same execution; a closed execution of that name (kept 90 days) or
// another input answers ExecutionAlreadyExists
// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html),
// which here means "this slot already ran or runs": reported, counted,
// not an error.

// WorkflowEnvVar is the environment variable holding the workflow's state
// machine ARN in the backup function (set by the stacks when a policy
// reboots in waves).
const WorkflowEnvVar = "AMIBACKUP_WORKFLOW_ARN"

// StepFunctions is what the hand-off needs of *sfn.Client.
type StepFunctions interface {
	StartExecution(context.Context, *sfn.StartExecutionInput, ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error)
}

// RebootsInWaves reports whether a policy's runs go to the workflow: it
// reboots (Policy.RebootEnabled) and its availability section, present or
// not, is not "all-at-once" (the safe default of pkg/config: without the
// section, waves with maxUnavailable 1 per group). The stacks route by the
// same function.
func RebootsInWaves(p *config.Policy) bool { return p.RebootEnabled() && p.Availability.Waves() }

// handOff starts the slot's execution (req passed the input checks; raw is
// the trigger as received, the execution's input).
func (b *Backuper) handOff(ctx context.Context, pol *config.Policy, req trigger.Backup, raw []byte) (*runner.Summary, error) {
	name := images.ExecutionName(pol.Name, req.Slot, req.DryRun)
	log := b.Log.With("policy", pol.Name, "slot", tags.FormatTime(req.Slot), "trigger", req.Trigger, "dryRun", req.DryRun, "execution", name)
	if b.Workflow == nil || b.WorkflowARN == "" {
		// A deployment problem, found before any call: the stacks set the
		// variable whenever a policy reboots in waves.
		err := fmt.Errorf("policy %q reboots in waves (availability mode %q) but %s is not set: deploy the stack again (it sets the workflow's ARN), or set availability.mode to %q",
			pol.Name, config.ModeWaves, WorkflowEnvVar, config.ModeAllAtOnce)
		log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	run := b.Start(1)
	sum := &runner.Summary{Function: Function, Deployment: b.Config.Deployment, Policy: pol.Name,
		Trigger: req.Trigger, Slot: req.Slot, DryRun: req.DryRun}
	arn := images.ExecutionARN(b.WorkflowARN, name)
	input := string(raw)
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()
	out, err := b.Workflow.StartExecution(wctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(b.WorkflowARN), Name: aws.String(name), Input: aws.String(input)})
	var exists *sfntypes.ExecutionAlreadyExists
	switch {
	case err == nil:
		arn = aws.ToString(out.ExecutionArn)
		started := ""
		if out.StartDate != nil {
			started = tags.FormatTime(*out.StartDate)
		}
		// A delivery while the execution runs gets the same answer (same
		// ARN and start date): still one run.
		sum.AddDone(runner.Entry{ID: name, Detail: fmt.Sprintf("workflow execution %s (started %s) reboots policy %s in waves", arn, started, pol.Name)})
		log.Info("workflow execution started (or, for a repeated delivery, already running with the same input)", "executionArn", arn, "startDate", started)
	case errors.As(err, &exists):
		sum.AddExisted(runner.Entry{ID: name, Detail: fmt.Sprintf("workflow execution %s already exists (closed, or running with another input): slot %s of policy %s already ran or runs; no second run", arn, tags.FormatTime(req.Slot), pol.Name)})
		log.Info("this slot's workflow execution already exists; no second run", "executionArn", arn, "awsMessage", exists.ErrorMessage())
	default:
		// Throttled past the retries, denied, or the service failing: the
		// invocation fails (its error alarm fires) and Lambda's retries of
		// an asynchronous invocation try again under the same name.
		log.Error("starting the workflow execution failed", "executionArn", arn, "error", err.Error(), "code", awsclient.ErrorCode(err))
		sum.AddFailed(runner.Entry{ID: name, Detail: fmt.Sprintf("StartExecution of %s: %v", arn, err)})
	}
	return sum, run.Finish(ctx, log, sum, func(s *runner.Summary) runner.Metrics {
		return runner.Metrics{Policies: []string{s.Policy}, Values: []emf.Metric{
			emf.CountOf(metrics.WorkflowStarted, len(s.Done)), emf.CountOf(metrics.WorkflowExisting, len(s.Existed))}}
	})
}
