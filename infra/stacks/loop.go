package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctionstasks"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/actionloop"
)

// The action loop is the machinery of amibackup's Standard workflows (the
// reboot-wave backup, pkg/rollout; restore verification, pkg/verify): one
// function called with one action at a time, carrying the state it
// returns ({"state", "done", "waitSeconds"}):
//
//	Start -> Started? -(done)-> Cleanup ...
//	              \-> Wait (waitSeconds) -> Step -> Step done? -(no)-> Wait
//	                                                  \-(yes)-> Cleanup -> Cleaned up? -(no)-> Wait to clean up -> Cleanup
//	                                                                           \-(yes)-> Finish -> Succeeded
//	Step, Cleanup (retries spent) -> Cleanup after error (loop) -> Failed
//	Start (retries spent) -> Failed (nothing was changed); Finish -> Finished with problems
//
// The cleanup action is what puts things back whatever happened (the
// rollout's "restore", verification's "cleanup": terminate what it
// launched), so every failure after Start goes through its own loop.
// JSONPath only (no JSONata, Assign or Distributed Map), Lambda tasks
// only: pkg/sfnlocal runs the synthesized definition offline.

// loopActions are the function's action names (its contract).
type loopActions struct{ Start, Step, Cleanup, Finish string }

// loopStates are the state names (the local runs override the Wait
// states by name; they are the construct IDs in the loop's scope).
type loopStates struct {
	Start, Started, Wait, Step, StepDone    string
	Cleanup, CleanedUp, CleanupWait, Finish string
	OnError, OnErrorDone, OnErrorWait       string
	Failed, FinishedFailed, Succeeded       string
}

// loopProps configure an action loop.
type loopProps struct {
	Function *AmiFunction
	Actions  loopActions
	States   loopStates
	// Failed: the Fail state after a failed Start or cleanup-after-error
	// loop; Problems: after a failed Finish (the run ended, with problems).
	FailedError, FailedCause, ProblemsError, ProblemsCause string
	// CleanupErrorPath is where the cleanup-after-error loop's own error
	// goes when it fails ($.error holds the error that started it).
	CleanupErrorPath string
	// StartContext adds the context object's execution and state machine
	// IDs to the Start payload ("execution", "stateMachine").
	StartContext bool
	// StartRetries are Start's retriers for the function's own errors,
	// placed before the loop's general retry (States.ALL must be the last
	// retrier), e.g. the rollout's AnotherRunActive.
	StartRetries []*awsstepfunctions.RetryProps
}

// actionLoop adds the loop's states to scope and returns its first state.
func actionLoop(scope constructs.Construct, p loopProps) awsstepfunctions.IChainable {
	fn, a, s := p.Function, p.Actions, p.States
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
	with := func(action string) map[string]any {
		return map[string]any{"action": action, "state": awsstepfunctions.JsonPath_StringAt(jsii.String("$.state"))}
	}
	// A throttled or briefly failing AWS API: retried (the actions are
	// rounds that look at the current state, safe to repeat).
	// (verify.SweepMargin is derived from these settings.)
	retry := &awsstepfunctions.RetryProps{Errors: jsii.Strings("States.ALL"), Interval: awscdk.Duration_Seconds(jsii.Number(actionloop.RetryInterval.Seconds())),
		MaxAttempts: jsii.Number(actionloop.Retries), BackoffRate: jsii.Number(actionloop.RetryBackoff)}
	failed := awsstepfunctions.NewFail(scope, jsii.String(s.Failed), &awsstepfunctions.FailProps{
		Error: jsii.String(p.FailedError), Cause: jsii.String(p.FailedCause)})
	finishedFailed := awsstepfunctions.NewFail(scope, jsii.String(s.FinishedFailed), &awsstepfunctions.FailProps{
		Error: jsii.String(p.ProblemsError), Cause: jsii.String(p.ProblemsCause)})

	startPayload := map[string]any{"action": a.Start, "input": awsstepfunctions.JsonPath_EntirePayload()}
	if p.StartContext {
		startPayload["execution"] = awsstepfunctions.JsonPath_StringAt(jsii.String("$$.Execution.Id"))
		startPayload["stateMachine"] = awsstepfunctions.JsonPath_StringAt(jsii.String("$$.StateMachine.Id"))
	}
	start := invoke(s.Start, startPayload)
	// A failed Start costs the slot: the execution's name (<policy>-<slot>)
	// stays taken for 90 days and every later delivery is "already ran".
	// So Start is retried like the other actions: it is safe to repeat.
	// The rollout's Start only reads until it returns, except that it
	// images the opted-out (no-reboot) instances through pkg/backup, which
	// is idempotent by name (the slot listing leaves out what exists, the
	// deterministic names and InvalidAMIName.Duplicate cover a race);
	// verification's Start sweeps leftovers of earlier runs (idempotent).
	// A Step Functions retrier whose attempts are spent does not fall
	// through to the next one: the Catch takes the error.
	for _, r := range p.StartRetries {
		start.AddRetry(r)
	}
	start.AddRetry(retry)
	start.AddCatch(failed, &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.error")})
	step := invoke(s.Step, with(a.Step))
	step.AddRetry(retry)
	cleanup := invoke(s.Cleanup, with(a.Cleanup))
	cleanup.AddRetry(retry)
	onError := invoke(s.OnError, with(a.Cleanup))
	onError.AddRetry(retry)
	onError.AddCatch(failed, &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String(p.CleanupErrorPath)})
	// The error goes beside the state ($.error): the cleanup loop still
	// reads the last state the run returned, and the tags find what a
	// failed step did after it.
	catch := &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.error")}
	step.AddCatch(onError, catch)
	cleanup.AddCatch(onError, catch)
	finish := invoke(s.Finish, with(a.Finish))
	finish.AddCatch(finishedFailed, &awsstepfunctions.CatchProps{Errors: jsii.Strings("States.ALL"), ResultPath: jsii.String("$.error")})
	finish.Next(awsstepfunctions.NewSucceed(scope, jsii.String(s.Succeeded), nil))

	done := awsstepfunctions.Condition_BooleanEquals(jsii.String("$.done"), jsii.Bool(true))
	secs := awsstepfunctions.WaitTime_SecondsPath(jsii.String("$.waitSeconds"))
	wait := awsstepfunctions.NewWait(scope, jsii.String(s.Wait), &awsstepfunctions.WaitProps{Time: secs})
	wait.Next(step)
	stepDone := awsstepfunctions.NewChoice(scope, jsii.String(s.StepDone), nil).When(done, cleanup, nil).Otherwise(wait)
	step.Next(stepDone)
	cleanupWait := awsstepfunctions.NewWait(scope, jsii.String(s.CleanupWait), &awsstepfunctions.WaitProps{Time: secs})
	cleanupWait.Next(cleanup)
	cleanup.Next(awsstepfunctions.NewChoice(scope, jsii.String(s.CleanedUp), nil).When(done, finish, nil).Otherwise(cleanupWait))
	onErrorWait := awsstepfunctions.NewWait(scope, jsii.String(s.OnErrorWait), &awsstepfunctions.WaitProps{Time: secs})
	onErrorWait.Next(onError)
	onError.Next(awsstepfunctions.NewChoice(scope, jsii.String(s.OnErrorDone), nil).When(done, failed, nil).Otherwise(onErrorWait))
	start.Next(awsstepfunctions.NewChoice(scope, jsii.String(s.Started), nil).When(done, cleanup, nil).Otherwise(wait))
	return start
}

// loopMachineProps configure the Standard state machine running a loop.
type loopMachineProps struct {
	// ID is the state machine's construct ID; its role and policy are
	// ID+"Role" and ID+"Policy" (logical IDs: keep them).
	ID string
	// Name is the state machine's physical name (empty: generated).
	Name      string
	Function  *AmiFunction
	Start     awsstepfunctions.IChainable
	Comment   string
	RoleDesc  string
	InvokeSid string
}

// loopMachine adds the Standard state machine of a loop and its role,
// which may only invoke the loop's function. The role is passed without
// policy updates, so CDK's grants (which add function:* version
// wildcards) do not apply.
func loopMachine(scope constructs.Construct, p loopMachineProps) (awsstepfunctions.StateMachine, awsiam.Role) {
	stack := awscdk.Stack_Of(scope)
	role := awsiam.NewRole(scope, jsii.String(p.ID+"Role"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("states.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()}},
		}),
		Description: jsii.String(p.RoleDesc),
	})
	policy := awsiam.NewPolicy(scope, jsii.String(p.ID+"Policy"), &awsiam.PolicyProps{
		Roles:      &[]awsiam.IRole{role},
		Statements: &[]awsiam.PolicyStatement{statement(p.InvokeSid, []string{"lambda:InvokeFunction"}, []string{*p.Function.FunctionArn()}, nil)},
	})
	var name *string
	if p.Name != "" {
		name = jsii.String(p.Name)
	}
	sm := awsstepfunctions.NewStateMachine(scope, jsii.String(p.ID), &awsstepfunctions.StateMachineProps{
		StateMachineName: name,
		Comment:          jsii.String(p.Comment),
		DefinitionBody:   awsstepfunctions.DefinitionBody_FromChainable(p.Start),
		StateMachineType: awsstepfunctions.StateMachineType_STANDARD,
		Role:             role.WithoutPolicyUpdates(nil),
	})
	sm.Node().AddDependency(policy)
	cdknag.NagSuppressions_AddResourceSuppressions(sm, &[]*cdknag.NagPackSuppression{
		{Id: jsii.String("AwsSolutions-SF1"), Reason: jsii.String("Step Functions keeps every execution's event history (90 days); the " + p.Function.Name + " function logs each action as JSON, and the role stays limited to invoking it (CloudWatch Logs delivery needs logs:* actions on \"*\").")},
		{Id: jsii.String("AwsSolutions-SF2"), Reason: jsii.String("No X-Ray: the function's JSON logs carry the request ID; tracing would need xray actions on \"*\".")},
	}, jsii.Bool(false))
	return sm, role
}
