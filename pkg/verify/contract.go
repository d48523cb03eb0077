// Package verify boots a policy's backups in isolation and records which
// ones boot (issue 14). The verification workflow (infra/stacks, a
// Standard state machine built like the rollout's) calls the verify
// function with one action at a time and carries the returned state:
//
//	{"action":"start","input":<execution input>}   -> {"state", "done", "waitSeconds"}
//	{"action":"step","state":...}                   -> {"state", "done", "waitSeconds"}
//	{"action":"cleanup","state":...}                -> {"state", "done", "waitSeconds"}
//	{"action":"finish","state":...}                 -> summary; an error when an image failed
//
// This file is the contract shared with the stacks; the rest of the
// package implements it.
//
// start parses the execution input (trigger.ParseVerify: the Scheduler
// input of the policy's verify.schedule or a "Verify Requested" event;
// bad input fails before any AWS call), sweeps the deployment's leftover
// verification instances (both tags, older than their policy's timeout
// plus SweepMargin: a run that is gone launched them), lists the policy's
// available images (pkg/images, tags checked again) and plans the run:
// each instance's newest image, except one verified already (an AMI is
// immutable: booting it again proves nothing, and a repeated execution of
// a slot boots nothing twice); a failed one is tried again. The sample
// takes the instances verified longest ago first. A manual imageIds list
// is verified as named. A dry run answers with the plan and launches
// nothing (RunInstances DryRun=true checks the permission).
//
// step observes the instances in flight (DescribeInstances by tag and ID,
// DescribeInstanceStatus), records outcomes on the images (verified:
// amibackup:verified=<time>, an earlier failure's tags deleted; failed:
// amibackup:verify=failed and the reason in amibackup:verify-error),
// terminates the finished instances and launches more (at most
// maxConcurrent in flight, LaunchBurst RunInstances a step) until the
// history budget's cutoff (launchCutoff: Step Functions' 25,000 events;
// what is not launched by then is reported not reached). An image that
// could not be booted for a reason that is not its own (no capacity in any
// subnet, RunInstances denied, the run ended) is "not tested": not tagged,
// the run fails. An image deregistered meanwhile is skipped.
//
// cleanup terminates what the run launched (its state, and by client-token
// prefix a launch whose answer was lost) and the leftovers; finish reports
// (runner.Summary), emits the metrics and fails when an image failed or
// was not tested, or instances are left.
package verify

// Function is the name used in summaries, metrics and the stacks.
const Function = "verify"

// Actions of the contract.
const (
	ActionStart   = "start"
	ActionStep    = "step"
	ActionCleanup = "cleanup"
	ActionFinish  = "finish"
)

// Environment of the verify function, set by the stacks: the isolated
// network the stack creates (used by the policies without their own
// subnetId/securityGroupId). Subnets: comma-separated subnet IDs, one per
// Availability Zone (an instance type missing in one zone is launched in
// the next).
const (
	EnvSubnets       = "AMIBACKUP_VERIFY_SUBNETS"
	EnvSecurityGroup = "AMIBACKUP_VERIFY_SECURITY_GROUP"
)
