package stacks

import (
	"fmt"
	"reflect"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/jsii-runtime-go"

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

// anotherRunActive is the errorType of rollout's guard error: Lambda names
// an error by its Go type name (pkg/invoke).
var anotherRunActive = reflect.TypeFor[rollout.AnotherRunActive]().Name()

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
//	Start (retries spent: AnotherRunActive for 2 h, others 3 times) -> Failed (nothing was changed); Finish -> Finished with problems
//
// JSONPath only (no JSONata, Assign or Distributed Map: pkg/sfnlocal runs it
// offline). The state machine's role may only invoke the rollout function.
//
// Executions are started by the backup function only (pkg/backup
// handoff.go: one execution per policy and slot, by name); Start gets the
// context object's execution and state machine IDs for the guard against
// another running execution of the workflow (pkg/rollout guard.go). The
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
	start := actionLoop(stack, loopProps{Function: fn,
		Actions: loopActions{Start: rollout.ActionStart, Step: rollout.ActionStep, Cleanup: rollout.ActionRestore, Finish: rollout.ActionFinish},
		States: loopStates{Start: StateStart, Started: StateStarted, Wait: StateWait, Step: StateStep, StepDone: StateStepDone,
			Cleanup: StateRestore, CleanedUp: StateRestored, CleanupWait: StateRestoreWait, Finish: StateFinish,
			OnError: StateOnError, OnErrorDone: StateOnErrorDone, OnErrorWait: StateOnErrorWait,
			Failed: StateFailed, FinishedFailed: StateFinishedFailed, Succeeded: StateSucceeded},
		FailedError: "RolloutFailed", FailedCause: "a task failed; see the execution's events (what the run took out of service was put back first)",
		ProblemsError: "RolloutProblems", ProblemsCause: "instances failed, a group halted or something is not back in service: see the finish error and the rollout summary log",
		CleanupErrorPath: "$.restoreError",
		// The guard's context (pkg/rollout guard.go): which execution this
		// is, and of which state machine.
		StartContext: true,
		// The guard's "another execution runs" (rollout.AnotherRunActive):
		// a blocked run waits its turn (every 5 minutes, for 2 hours: a
		// night's run of a large fleet, see the README's measurements)
		// instead of failing and losing its slot; then it fails and the
		// workflow alarm fires. Step Functions takes the first retrier
		// that names the error, so this one comes before the general one.
		StartRetries: []*awsstepfunctions.RetryProps{{Errors: jsii.Strings(anotherRunActive),
			Interval: awscdk.Duration_Seconds(jsii.Number(300)), MaxAttempts: jsii.Number(24), BackoffRate: jsii.Number(1)}}})
	w.StateMachine, w.Role = loopMachine(stack, loopMachineProps{ID: "Workflow", Name: smName, Function: fn, Start: start, InvokeSid: "InvokeRollout",
		Comment:  "amibackup: backups that reboot in waves per availability group (" + cfg.Deployment + ")",
		RoleDesc: "amibackup workflow invokes the rollout function (" + cfg.Deployment + ")"})

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
		statement("DescribeForDrain", []string{"ec2:DescribeInstanceStatus", "autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeAutoScalingGroups",
			"elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes", "elasticloadbalancing:DescribeTargetHealth"}, []string{"*"}, nil),
		// Auto Scaling and ELBv2 scope these by group and target group ARN
		// (and their tags, which amibackup does not set); the groups are
		// found at run time from the instances selected.
		statement("StandbyAndBack", []string{"autoscaling:EnterStandby", "autoscaling:ExitStandby"}, []string{asgARN(stack)}, nil),
		statement("DeregisterAndRegisterTargets", []string{"elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"},
			[]string{targetGroupARN(stack)}, nil),
		// Null=false: a DeleteTags naming no tag deletes every user tag of
		// the instance (EC2 API reference, DeleteTags), and ForAllValues
		// holds for an empty set of keys.
		statement("DrainTagOnly", []string{"ec2:CreateTags", "ec2:DeleteTags"}, []string{arn(stack, "instance/*")},
			map[string]any{"ForAllValues:StringEquals": map[string]any{"aws:TagKeys": []string{drain.TagKey}},
				"Null": map[string]any{"aws:TagKeys": "false"}}),
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
