package stacks

import (
	"encoding/json"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsscheduler"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// What starts the functions: EventBridge Scheduler schedules (one group,
// one role allowed to invoke exactly the scheduled functions) and
// EventBridge rules (manual requests, image state changes).

// SweepInput is the Scheduler input of the share sweep and the copy runs.
const SweepInput = `{"sweep":true,"time":"<aws.scheduler.scheduled-time>"}`

// SchedulerInput is the input a schedule passes to the functions.
func SchedulerInput(policy string) string {
	m := map[string]string{"time": "<aws.scheduler.scheduled-time>"}
	if policy != "" {
		m["policy"] = policy
	}
	// Without SetEscapeHTML(false), '<' and '>' become \u003c and \u003e and
	// Scheduler would pass the placeholder through unreplaced.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(m)
	return strings.TrimSpace(b.String())
}

// Schedules are a stack's schedule group and the role its schedules
// invoke the functions with. Its resources are created in the scope given
// (the stack), with the IDs they had before this type existed, so no
// logical ID changed.
type Schedules struct {
	scope       constructs.Construct
	deadLetters awssqs.Queue
	Group       awsscheduler.CfnScheduleGroup
	Role        awsiam.Role
	// Policy grants the role lambda:InvokeFunction on each scheduled
	// function (Add) and the dead-letter queue.
	Policy awsiam.Policy
}

// NewSchedules adds the schedule group and the scheduler role; failed
// invocations go to the notifications' dead-letter queue.
func NewSchedules(scope constructs.Construct, cfg *config.Config, n *Notifications) *Schedules {
	stack := awscdk.Stack_Of(scope)
	s := &Schedules{scope: scope, deadLetters: n.DeadLetters}
	s.Group = awsscheduler.NewCfnScheduleGroup(scope, jsii.String("Schedules"), &awsscheduler.CfnScheduleGroupProps{
		Name: jsii.String(deploymentName(cfg.Deployment, maxScheduleGroupName)),
	})
	s.Role = awsiam.NewRole(scope, jsii.String("SchedulerRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("scheduler.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()}},
		}),
		Description: jsii.String("EventBridge Scheduler invokes the amibackup functions"),
	})
	// Explicit statements instead of grant helpers: the helpers add
	// version wildcards (function:*) and KMS action wildcards.
	s.Policy = awsiam.NewPolicy(scope, jsii.String("SchedulerPolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{s.Role},
		Statements: &[]awsiam.PolicyStatement{
			statement("DeadLetters", []string{"sqs:SendMessage"}, []string{*n.DeadLetters.QueueArn()}, nil),
			statement("DeadLetterEncryption", []string{"kms:GenerateDataKey", "kms:Decrypt"}, []string{*n.Key.KeyArn()}, nil),
		},
	})
	return s
}

// Add adds a schedule invoking fn with input, with a retry policy and the
// dead-letter queue, and lets the role invoke fn.
func (s *Schedules) Add(id, name string, sched config.Schedule, fn *AmiFunction, input string) awsscheduler.CfnSchedule {
	s.Policy.AddStatements(statement("Invoke"+id, []string{"lambda:InvokeFunction"}, []string{*fn.FunctionArn()}, nil))
	return s.add(id, name, sched, fn.FunctionArn(), input)
}

// AddStateMachine adds a schedule starting an execution of sm with input
// (Scheduler's templated Step Functions StartExecution target: the input
// becomes the execution input), with the same retry policy and dead-letter
// queue, and lets the role start it. The target cannot name the execution
// from the slot (names exclude ':'), so a duplicate delivery starts a
// second execution: only for workflows where that is harmless (the
// verification: a second run of a slot boots an image twice in isolation
// at worst, and never reboots a production instance). The reboot-wave
// workflow is started by the backup function instead (pkg/backup handoff.go).
func (s *Schedules) AddStateMachine(id, name string, sched config.Schedule, sm awsstepfunctions.StateMachine, input string) awsscheduler.CfnSchedule {
	s.Policy.AddStatements(statement("Start"+id, []string{"states:StartExecution"}, []string{*sm.StateMachineArn()}, nil))
	return s.add(id, name, sched, sm.StateMachineArn(), input)
}

func (s *Schedules) add(id, name string, sched config.Schedule, target *string, input string) awsscheduler.CfnSchedule {
	return awsscheduler.NewCfnSchedule(s.scope, jsii.String(id), &awsscheduler.CfnScheduleProps{
		Name:                       jsii.String(physicalName(name, maxScheduleName)),
		GroupName:                  s.Group.Ref(),
		Description:                jsii.String("amibackup " + name),
		ScheduleExpression:         jsii.String(sched.Expression),
		ScheduleExpressionTimezone: jsii.String(sched.TimeZone),
		FlexibleTimeWindow:         &awsscheduler.CfnSchedule_FlexibleTimeWindowProperty{Mode: jsii.String("OFF")},
		State:                      jsii.String("ENABLED"),
		Target: &awsscheduler.CfnSchedule_TargetProperty{
			Arn:              target,
			RoleArn:          s.Role.RoleArn(),
			Input:            jsii.String(input),
			RetryPolicy:      &awsscheduler.CfnSchedule_RetryPolicyProperty{MaximumRetryAttempts: jsii.Number(3), MaximumEventAgeInSeconds: jsii.Number(3600)},
			DeadLetterConfig: &awsscheduler.CfnSchedule_DeadLetterConfigProperty{Arn: s.deadLetters.QueueArn()},
		},
	})
}

// ruleToFunction adds an EventBridge rule on the default bus invoking fn
// with the event, retried twice within an hour, then dead-lettered.
func ruleToFunction(scope constructs.Construct, id, description string, pattern *awsevents.EventPattern, fn *AmiFunction, deadLetters awssqs.Queue) awsevents.Rule {
	rule := awsevents.NewRule(scope, jsii.String(id), &awsevents.RuleProps{Description: jsii.String(description), EventPattern: pattern})
	// fn.Function: jsii passes only its own objects, not the Go type embedding one.
	rule.AddTarget(awseventstargets.NewLambdaFunction(fn.Function, &awseventstargets.LambdaFunctionProps{
		DeadLetterQueue: deadLetters,
		RetryAttempts:   jsii.Number(2),
		MaxEventAge:     awscdk.Duration_Hours(jsii.Number(1)),
	}))
	return rule
}

// manualRule routes a manual request (source amibackup, detailType) on the
// default bus to fn.
func manualRule(scope constructs.Construct, id, detailType string, fn *AmiFunction, deadLetters awssqs.Queue) awsevents.Rule {
	pattern := &awsevents.EventPattern{Source: jsii.Strings(trigger.Source), DetailType: jsii.Strings(detailType)}
	return ruleToFunction(scope, id, "amibackup manual run: source "+trigger.Source+", detail-type "+detailType, pattern, fn, deadLetters)
}
