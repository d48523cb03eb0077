package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// The start guard: one running reboot-wave execution per state machine
// (one workflow per stack), whatever its policy.
//
// The backup function names each execution for its policy and slot
// (images.ExecutionName), so one slot never runs twice. Two executions can
// still overlap: a manual run while the nightly one runs, a night that
// outlasts a day, or two policies whose selectors reach the same fleet (a
// daily and a weekly tag on the same Auto Scaling group or target group).
// Each would keep its own groups within maxUnavailable, but together they
// could take two members of a group down at once; which groups two
// policies share is only known once both have selected and looked up their
// target groups, and can change during the night. So executions are
// serialized: start, before it changes anything, lists the state machine's
// RUNNING executions ($$.StateMachine.Id and $$.Execution.Id of the context
// object reach it in the payload) and fails with *AnotherRunActive, naming
// the other execution, when another real (not dry-run) execution started
// earlier (on a tie, the one with the smaller name goes first). The state
// machine retries that error for about two hours (infra/stacks workflow.go)
// before the execution fails, so a blocked nightly run waits its turn
// instead of losing its slot. Whether an execution is a dry run is read
// from its name; an execution started by hand under another name is
// described (DescribeExecution) and its input parsed like a trigger (input
// no start accepts fails at its own start and blocks no one). Dry runs
// change nothing: they neither wait for nor block anyone.
//
// ListExecutions "is eventually consistent. The results are best effort
// and may not reflect very recent updates and changes"
// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html):
// two executions started within moments of each other may both miss the
// other and both proceed. What still holds then: a slot's images are never
// duplicated (the slot listing and the deterministic image names, with
// InvalidAMIName.Duplicate behind them), each execution keeps its own plan
// within maxUnavailable, and everything either takes out of service is
// recorded in the drain tags and put back.

// AnotherRunActive is the guard's error: another execution of the workflow
// runs and goes first. Lambda reports its type name as the errorType
// ("AnotherRunActive", see pkg/invoke), which the state machine's Start
// retries with a long interval; any other error of Start is not this one.
// Start returns it unwrapped so that the type name survives.
type AnotherRunActive struct {
	// Other is the running execution's ARN, Policy its policy ("" when
	// read from an input that names none), Started its start.
	Other, Policy string
	Started       time.Time
	// Self is this execution's name, SelfStarted its start.
	Self        string
	SelfStarted time.Time
}

func (e *AnotherRunActive) Error() string {
	return fmt.Sprintf("rollout start: execution %s of policy %q (started %s) is running; this execution %s (started %s) stops before changing anything, "+
		"so that two runs never take members of the same group down at once (executions of all policies run one at a time): "+
		"the workflow retries this start for about two hours; otherwise wait until it ends (or stop it), then start again",
		e.Other, e.Policy, tags.FormatTime(e.Started), e.Self, tags.FormatTime(e.SelfStarted))
}

// Execution is the workflow execution a start request runs in: the
// context object's $$.Execution.Id and $$.StateMachine.Id.
type Execution struct {
	ID           string `json:"execution,omitempty"`
	StateMachine string `json:"stateMachine,omitempty"`
}

// StepFunctions is what the guard needs of *sfn.Client.
type StepFunctions interface {
	sfn.ListExecutionsAPIClient
	DescribeExecution(context.Context, *sfn.DescribeExecutionInput, ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error)
}

var stateMachineARNRE = regexp.MustCompile(`^arn:[a-z0-9-]+:states:[a-z0-9-]+:[0-9]{12}:stateMachine:[^:]{1,80}$`)

// check validates the execution context of a start request (before any call).
func (ex Execution) check() error {
	if ex.ID == "" && ex.StateMachine == "" {
		return nil
	}
	if !stateMachineARNRE.MatchString(ex.StateMachine) {
		return fmt.Errorf("input.stateMachine: %q is not a state machine ARN: the workflow passes $$.StateMachine.Id", ex.StateMachine)
	}
	prefix := images.ExecutionARN(ex.StateMachine, "")
	if name, ok := strings.CutPrefix(ex.ID, prefix); !ok || name == "" || strings.Contains(name, ":") {
		return fmt.Errorf("input.execution: %q is not an execution of %s: the workflow passes $$.Execution.Id", ex.ID, ex.StateMachine)
	}
	return nil
}

func (ex Execution) name() string { return ex.ID[strings.LastIndexByte(ex.ID, ':')+1:] }

// running is another real execution of the workflow.
type running struct {
	arn, name, policy string
	start             time.Time
}

// guard fails with *AnotherRunActive when another real execution of the
// workflow (any policy) runs and goes first.
// Without an execution context (the function invoked directly, not by the
// workflow, e.g. by hand) it logs that it cannot check and lets the run go.
func (r *Roller) guard(ctx context.Context, log *slog.Logger, req trigger.Backup, ex Execution) error {
	if ex.ID == "" {
		log.Warn("no execution context in the start request: not checking for another running execution of the workflow")
		return nil
	}
	if req.DryRun {
		return nil
	}
	if r.StepFunctions == nil {
		return errors.New("rollout start: no Step Functions client to check for another running execution of the workflow")
	}
	var self *time.Time
	var others []running
	pg := sfn.NewListExecutionsPaginator(r.StepFunctions, &sfn.ListExecutionsInput{
		StateMachineArn: aws.String(ex.StateMachine), StatusFilter: sfntypes.ExecutionStatusRunning, MaxResults: 1000})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("rollout start: list the running executions of %s: %w", ex.StateMachine, err)
		}
		for _, it := range page.Executions {
			arn, name := aws.ToString(it.ExecutionArn), aws.ToString(it.Name)
			if arn == ex.ID {
				self = it.StartDate
				continue
			}
			policy, real, err := r.realRun(ctx, arn, name)
			if err != nil {
				return err
			}
			if real {
				others = append(others, running{arn: arn, name: name, policy: policy, start: aws.ToTime(it.StartDate)})
			}
		}
	}
	if len(others) == 0 {
		return nil
	}
	selfStart := r.Clock()()
	if self != nil {
		selfStart = *self
	} else {
		// Not listed yet (the listing is eventually consistent).
		d, err := r.StepFunctions.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(ex.ID)})
		var missing *sfntypes.ExecutionDoesNotExist
		switch {
		case err == nil && d.StartDate != nil:
			selfStart = *d.StartDate
		case err != nil && !errors.As(err, &missing):
			return fmt.Errorf("rollout start: describe this execution %s: %w", ex.ID, err)
		}
	}
	for _, o := range others {
		if o.start.Before(selfStart) || (o.start.Equal(selfStart) && o.name < ex.name()) {
			return &AnotherRunActive{Other: o.arn, Policy: o.policy, Started: o.start, Self: ex.name(), SelfStarted: selfStart}
		}
	}
	log.Info("another execution of the workflow runs but started later: it stops at its start", "others", len(others))
	return nil
}

// realRun reports whether the running execution arn (name) is a real (not
// dry-run) run of the workflow, and its policy: by its name, or for a name
// not ours by its input.
func (r *Roller) realRun(ctx context.Context, arn, name string) (string, bool, error) {
	if p, ok := images.ParseExecutionName(name); ok {
		return p.Policy, !p.DryRun, nil
	}
	d, err := r.StepFunctions.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
	var missing *sfntypes.ExecutionDoesNotExist
	switch {
	case errors.As(err, &missing):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("rollout start: describe running execution %s: %w", arn, err)
	}
	req, err := trigger.ParseBackup([]byte(aws.ToString(d.Input)), r.Config)
	if err != nil {
		// Input no start accepts: that execution fails at its own start.
		return "", false, nil
	}
	return req.Policy, !req.DryRun, nil
}
