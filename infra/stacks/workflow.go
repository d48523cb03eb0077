package stacks

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctionstasks"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/rollout"
)

// State names of the workflow (the local runs override the Wait states by name).
const (
	StateStart          = "Start"
	StateStarted        = "Started?"
	StateWait           = "Wait"
	StateStep           = "Step"
	StateStepDone       = "All done?"
	StateRestore        = "Restore"
	StateRestored       = "Restored?"
	StateRestoreWait    = "Wait to restore"
	StateFinish         = "Finish"
	StateOnError        = "Restore after error"
	StateOnErrorDone    = "Restored after error?"
	StateOnErrorWait    = "Wait to restore after error"
	StateFailed         = "Failed"
	StateFinishedFailed = "Finished with problems"
	StateSucceeded      = "Succeeded"
)

// wavesPolicies are the policies that reboot in waves through the
// workflow (backup.RebootsInWaves): every policy that reboots, unless its
// availability section says "all-at-once". A policy without the section
// gets pkg/config's safe defaults (groups by Auto Scaling group and target
// group, one member down at a time): rebooting a whole service at once is
// the operator's explicit choice, not the default.
func wavesPolicies(cfg *config.Config) []config.Policy {
	var out []config.Policy
	for _, p := range cfg.Policies {
		if backup.RebootsInWaves(&p) {
			out = append(out, p)
		}
	}
	return out
}

// Workflow is the reboot-wave backup: the rollout function and a Standard
// state machine that calls it in a loop (pkg/rollout's action contract):
//
//	Start -> Started? -(done)-> Restore ...
//	              \-> Wait (waitSeconds) -> Step -> All done? -(no)-> Wait
//	                                                  \-(yes)-> Restore -> Restored? -(no)-> Wait to restore -> Restore
//	                                                                           \-(yes)-> Finish -> Succeeded
//	Step, Restore (retries spent) -> Restore after error (loop) -> Failed
//	Start -> Failed (nothing was changed); Finish -> Finished with problems
//
// JSONPath only (no JSONata, Assign or Distributed Map: pkg/sfnlocal runs it
// offline). The state machine's role may only invoke the rollout function.
//
// Executions are started by the backup function only (pkg/backup
// handoff.go: one execution per policy and slot, by name); Start gets the
// context object's execution and state machine IDs for the guard against
// another running execution of the policy (pkg/rollout guard.go). The
// state machine has a fixed name (StateMachineName) so that the rollout
// role's states:ListExecutions and states:DescribeExecution can name it
// and its executions without a reference to the state machine, which
// depends on the rollout function (a dependency cycle otherwise).
type Workflow struct {
	Function     *AmiFunction
	StateMachine awsstepfunctions.StateMachine
	Role         awsiam.Role
}

// NewWorkflow adds the workflow for the waves policies of cfg.
func NewWorkflow(c *Common, cfg *config.Config, root string, policies []config.Policy) (*Workflow, error) {
	stack := c.Stack
	sub := *cfg
	sub.Policies = policies
	smName := StateMachineName(cfg.Deployment)
	fn, err := NewAmiFunction(stack, &AmiFunctionProps{Name: "rollout", Config: cfg, Root: root,
		Statements: rolloutStatements(stack, &sub, smName), Wildcards: rolloutWildcards(stack, smName), Notifications: c.Notifications})
	if err != nil {
		return nil, err
	}
	w := &Workflow{Function: fn}
	scope := stack
	invoke := func(id string, payload map[string]any) awsstepfunctionstasks.LambdaInvoke {
		return awsstepfunctionstasks.NewLambdaInvoke(scope, jsii.String(id), &awsstepfunctionstasks.LambdaInvokeProps{
			LambdaFunction:           fn.Function,
			Payload:                  awsstepfunctions.TaskInput_FromObject(&payload),
			PayloadResponseOnly:      jsii.Bool(true),
			RetryOnServiceExceptions: jsii.Bool(true),
			// The function's own timeout; the local engine's default is 60 s.
			TaskTimeout: awsstepfunctions.Timeout_Duration(awscdk.Duration_Minutes(jsii.Number(functionTimeoutMinutes))),
		})
	}
	state := map[string]any{"state": awsstepfunctions.JsonPath_StringAt(jsii.String("$.state"))}
	with := func(action string) map[string]any {
		m := map[string]any{"action": action}
		for k, v := range state {
			m[k] = v
		}
		return m
	}
	// A throttled or briefly failing AWS API: retried (the actions are
	// rounds that look at the current state, safe to repeat).
	retry := &awsstepfunctions.RetryProps{Errors: jsii.Strings("States.ALL"), Interval: awscdk.Duration_Seconds(jsii.Number(10)),
		MaxAttempts: jsii.Number(3), BackoffRate: jsii.Number(2)}
	failed := awsstepfunctions.NewFail(scope, jsii.String(StateFailed), &awsstepfunctions.FailProps{
		Error: jsii.String("RolloutFailed"), Cause: jsii.String("a task failed; see the execution's events (what the run took out of service was put back first)")})
	finishedFailed := awsstepfunctions.NewFail(scope, jsii.String(StateFinishedFailed), &awsstepfunctions.FailProps{
		Error: jsii.String("RolloutProblems"), Cause: jsii.String("instances failed, a group halted or something is not back in service: see the finish error and the rollout summary log")})

	start := invoke(StateStart, map[string]any{"action": rollout.ActionStart, "input": awsstepfunctions.JsonPath_EntirePayload(),
		// The guard's context (pkg/rollout guard.go): which execution this
		// is, and of which state machine.
		"execution":    awsstepfunctions.JsonPath_StringAt(jsii.String("$$.Execution.Id")),
		"stateMachine": awsstepfunctions.JsonPath_StringAt(jsii.String("$$.StateMachine.Id"))})
	start.AddCatch(failed, &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.error")})
	step := invoke(StateStep, with(rollout.ActionStep))
	step.AddRetry(retry)
	restore := invoke(StateRestore, with(rollout.ActionRestore))
	restore.AddRetry(retry)
	onError := invoke(StateOnError, with(rollout.ActionRestore))
	onError.AddRetry(retry)
	onError.AddCatch(failed, &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.restoreError")})
	// The error goes beside the state ($.error): the restore loop still
	// reads the last state the run returned, and the tags find what a
	// failed step took after it.
	catch := &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.error")}
	step.AddCatch(onError, catch)
	restore.AddCatch(onError, catch)
	finish := invoke(StateFinish, with(rollout.ActionFinish))
	finish.AddCatch(finishedFailed, &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.error")})
	finish.Next(awsstepfunctions.NewSucceed(scope, jsii.String(StateSucceeded), nil))

	done := awsstepfunctions.Condition_BooleanEquals(jsii.String("$.done"), jsii.Bool(true))
	secs := awsstepfunctions.WaitTime_SecondsPath(jsii.String("$.waitSeconds"))
	wait := awsstepfunctions.NewWait(scope, jsii.String(StateWait), &awsstepfunctions.WaitProps{Time: secs})
	wait.Next(step)
	stepDone := awsstepfunctions.NewChoice(scope, jsii.String(StateStepDone), nil).When(done, restore, nil).Otherwise(wait)
	step.Next(stepDone)
	restoreWait := awsstepfunctions.NewWait(scope, jsii.String(StateRestoreWait), &awsstepfunctions.WaitProps{Time: secs})
	restoreWait.Next(restore)
	restore.Next(awsstepfunctions.NewChoice(scope, jsii.String(StateRestored), nil).When(done, finish, nil).Otherwise(restoreWait))
	onErrorWait := awsstepfunctions.NewWait(scope, jsii.String(StateOnErrorWait), &awsstepfunctions.WaitProps{Time: secs})
	onErrorWait.Next(onError)
	onError.Next(awsstepfunctions.NewChoice(scope, jsii.String(StateOnErrorDone), nil).When(done, failed, nil).Otherwise(onErrorWait))
	start.Next(awsstepfunctions.NewChoice(scope, jsii.String(StateStarted), nil).When(done, restore, nil).Otherwise(wait))

	// The role: only our function. Passed without policy updates, so CDK's
	// grants (which add function:* version wildcards) do not apply.
	w.Role = awsiam.NewRole(scope, jsii.String("WorkflowRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("states.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()}},
		}),
		Description: jsii.String("amibackup workflow invokes the rollout function (" + cfg.Deployment + ")"),
	})
	policy := awsiam.NewPolicy(scope, jsii.String("WorkflowPolicy"), &awsiam.PolicyProps{
		Roles:      &[]awsiam.IRole{w.Role},
		Statements: &[]awsiam.PolicyStatement{statement("InvokeRollout", []string{"lambda:InvokeFunction"}, []string{*fn.FunctionArn()}, nil)},
	})
	w.StateMachine = awsstepfunctions.NewStateMachine(scope, jsii.String("Workflow"), &awsstepfunctions.StateMachineProps{
		StateMachineName: jsii.String(smName),
		Comment:          jsii.String("amibackup: backups that reboot in waves per availability group (" + cfg.Deployment + ")"),
		DefinitionBody:   awsstepfunctions.DefinitionBody_FromChainable(start),
		StateMachineType: awsstepfunctions.StateMachineType_STANDARD,
		Role:             w.Role.WithoutPolicyUpdates(nil),
	})
	w.StateMachine.Node().AddDependency(policy)
	cdknag.NagSuppressions_AddResourceSuppressions(w.StateMachine, &[]*cdknag.NagPackSuppression{
		{Id: jsii.String("AwsSolutions-SF1"), Reason: jsii.String("Step Functions keeps every execution's event history (90 days); the rollout function logs each action as JSON, and the role stays limited to invoking it (CloudWatch Logs delivery needs logs:* actions on \"*\").")},
		{Id: jsii.String("AwsSolutions-SF2"), Reason: jsii.String("No X-Ray: the function's JSON logs carry the request ID; tracing would need xray actions on \"*\".")},
	}, jsii.Bool(false))

	// Alarms: a failed execution; a halted group; an instance left out of service.
	c.Notifications.AlarmOnAny("WorkflowFailedAlarm", "amibackup workflow execution failed (see the execution's events and the rollout summary log)",
		w.StateMachine.MetricFailed(nil))
	for i, p := range policies {
		c.Notifications.AlarmOnAny(fmt.Sprintf("GroupsHaltedAlarm%d", i), "amibackup policy "+p.Name+": an availability group halted (a member was not healthy within healthTimeout)",
			metric(metrics.GroupsHalted, p.Name, "Sum", hourly()))
		c.Notifications.AlarmOnAny(fmt.Sprintf("NotRestoredAlarm%d", i), "amibackup policy "+p.Name+": instances left in Standby or deregistered (tag "+drain.TagKey+")",
			metric(metrics.InstancesNotRestored, p.Name, "Sum", hourly()))
	}
	return w, nil
}

// rolloutStatements: the backup's CreateImage statements for the waves
// policies, the reads of the drain, Standby and target registration, the
// drain tag on instances only, and the start guard's listing of this state
// machine's executions (smName: its fixed name).
func rolloutStatements(stack awscdk.Stack, cfg *config.Config, smName string) []awsiam.PolicyStatement {
	st := backupStatements(stack, cfg)
	return append(st,
		statement("DescribeForDrain", []string{"ec2:DescribeInstanceStatus", "autoscaling:DescribeAutoScalingInstances",
			"elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth"}, []string{"*"}, nil),
		// Auto Scaling and ELBv2 scope these by group and target group ARN
		// (and their tags, which amibackup does not set); the groups are
		// found at run time from the instances selected.
		statement("StandbyAndBack", []string{"autoscaling:EnterStandby", "autoscaling:ExitStandby"}, []string{asgARN(stack)}, nil),
		statement("DeregisterAndRegisterTargets", []string{"elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"},
			[]string{targetGroupARN(stack)}, nil),
		statement("DrainTagOnly", []string{"ec2:CreateTags", "ec2:DeleteTags"}, []string{arn(stack, "instance/*")},
			map[string]any{"ForAllValues:StringEquals": map[string]any{"aws:TagKeys": []string{drain.TagKey}}}),
		// The start guard (Service Authorization Reference, Step Functions:
		// ListExecutions on the stateMachine resource, DescribeExecution on
		// the execution resource).
		statement("ListOwnExecutions", []string{"states:ListExecutions"}, []string{stateMachineARN(stack, smName)}, nil),
		statement("DescribeOwnExecutions", []string{"states:DescribeExecution"}, []string{executionsARN(stack, smName)}, nil),
	)
}

// stateMachineARN is the ARN of the state machine named name in the stack's
// account and Region.
func stateMachineARN(stack awscdk.Stack, name string) string {
	return fmt.Sprintf("arn:%s:states:%s:%s:stateMachine:%s", *stack.Partition(), *stack.Region(), *stack.Account(), name)
}

// executionsARN covers every execution of the state machine named name.
func executionsARN(stack awscdk.Stack, name string) string {
	return fmt.Sprintf("arn:%s:states:%s:%s:execution:%s:*", *stack.Partition(), *stack.Region(), *stack.Account(), name)
}

func asgARN(stack awscdk.Stack) string {
	return fmt.Sprintf("arn:%s:autoscaling:%s:%s:autoScalingGroup:*:autoScalingGroupName/*", *stack.Partition(), *stack.Region(), *stack.Account())
}

func targetGroupARN(stack awscdk.Stack) string {
	return fmt.Sprintf("arn:%s:elasticloadbalancing:%s:%s:targetgroup/*/*", *stack.Partition(), *stack.Region(), *stack.Account())
}

func rolloutWildcards(stack awscdk.Stack, smName string) []Wildcard {
	w := backupWildcards(stack)
	return append(w,
		Wildcard{executionsARN(stack, smName), "DescribeExecution of this workflow's own executions (start guard: the input of a running execution not named by amibackup); execution names are not known in advance."},
		Wildcard{asgARN(stack), "EnterStandby/ExitStandby of the selected instances' Auto Scaling groups of this account and Region, found at run time; every change is recorded in the instance tag " + drain.TagKey + " and put back."},
		Wildcard{targetGroupARN(stack), "DeregisterTargets/RegisterTargets of the selected instances in their target groups of this account and Region, found at run time; every change is recorded in the instance tag " + drain.TagKey + " and put back."},
	)
}
