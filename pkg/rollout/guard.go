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

// The start guard: one running execution per policy.
//
// The backup function names each execution for its policy and slot
// (images.ExecutionName), so one slot never runs twice. Two executions of
// different slots of the same policy can still overlap: a manual run while
// the nightly one runs, or a night that outlasts a day. Each would keep
// its own groups within maxUnavailable, but together they could take two
// members of a group down at once. So start, before it changes anything,
// lists the state machine's RUNNING executions ($$.StateMachine.Id and
// $$.Execution.Id of the context object reach it in the payload) and fails,
// naming the other execution, when another execution of the same policy
// started earlier (on a tie, the one with the smaller name goes first).
// An execution's policy is read from its name; an execution started by
// hand under another name is described (DescribeExecution) and its input
// parsed like a trigger. Dry runs change nothing: they neither wait for nor
// block anyone.
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
	prefix := strings.Replace(ex.StateMachine, ":stateMachine:", ":execution:", 1) + ":"
	if name, ok := strings.CutPrefix(ex.ID, prefix); !ok || name == "" || strings.Contains(name, ":") {
		return fmt.Errorf("input.execution: %q is not an execution of %s: the workflow passes $$.Execution.Id", ex.ID, ex.StateMachine)
	}
	return nil
}

func (ex Execution) name() string { return ex.ID[strings.LastIndexByte(ex.ID, ':')+1:] }

// running is another execution of the policy.
type running struct {
	arn, name string
	start     time.Time
}

// guard fails when another execution of req's policy runs and goes first.
// Without an execution context (the function invoked directly, not by the
// workflow, e.g. by hand) it logs that it cannot check and lets the run go.
func (r *Roller) guard(ctx context.Context, log *slog.Logger, req trigger.Backup, ex Execution) error {
	if ex.ID == "" {
		log.Warn("no execution context in the start request: not checking for another running execution of the policy")
		return nil
	}
	if req.DryRun {
		return nil
	}
	if r.StepFunctions == nil {
		return errors.New("rollout start: no Step Functions client to check for another running execution of the policy")
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
			same, err := r.samePolicy(ctx, req.Policy, arn, name)
			if err != nil {
				return err
			}
			if same {
				others = append(others, running{arn: arn, name: name, start: aws.ToTime(it.StartDate)})
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
			return fmt.Errorf("rollout start: execution %s of policy %q (started %s) is running; this execution %s (started %s) stops before changing anything, "+
				"so that two runs never take members of the same group down at once: wait until it ends (or stop it), then start again",
				o.arn, req.Policy, tags.FormatTime(o.start), ex.name(), tags.FormatTime(selfStart))
		}
	}
	log.Info("another execution of the policy runs but started later: it stops at its start", "others", len(others))
	return nil
}

// samePolicy reports whether the running execution arn (name) is a real
// run of policy: by its name, or for a name not ours by its input.
func (r *Roller) samePolicy(ctx context.Context, policy, arn, name string) (bool, error) {
	if p, ok := images.ParseExecutionName(name); ok {
		return p.Policy == policy && !p.DryRun, nil
	}
	d, err := r.StepFunctions.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
	var missing *sfntypes.ExecutionDoesNotExist
	switch {
	case errors.As(err, &missing):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("rollout start: describe running execution %s: %w", arn, err)
	}
	req, err := trigger.ParseBackup([]byte(aws.ToString(d.Input)), r.Config)
	if err != nil {
		// Input no start accepts: that execution fails at its own start.
		return false, nil
	}
	return req.Policy == policy && !req.DryRun, nil
}
