package stacks

import (
	"crypto/sha256"
	"encoding/hex"
)

// Limits of the names the stacks set explicitly. Everything else (roles,
// functions, log groups, topic, queue, rules, alarms) gets a name from
// CloudFormation, which fits the service's limit by itself; names_test.go
// fails when a resource gets an explicit name with no limit listed here.
//
//   - Scheduler schedule group and schedule: 1-64 of [0-9a-zA-Z-_.]
//     (CloudFormation AWS::Scheduler::ScheduleGroup / AWS::Scheduler::Schedule, Name;
//     https://docs.aws.amazon.com/scheduler/latest/APIReference/API_ScheduleGroupSummary.html).
//   - CloudWatch dashboard: 1-255 of [A-Za-z0-9_-]
//     (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudwatch-dashboard.html).
//   - KMS alias: 1-256 of [A-Za-z0-9/_-], "alias/" prefix, not "alias/aws/"
//     (https://docs.aws.amazon.com/kms/latest/developerguide/alias-create.html).
//   - Step Functions state machine: 1-80, no white space, brackets,
//     wildcards, control characters or " # % \ ^ | ~ ` $ & , ; : /
//     (https://docs.aws.amazon.com/step-functions/latest/apireference/API_CreateStateMachine.html);
//     the deployment name is [A-Za-z0-9-] (pkg/config). Its executions'
//     names are pkg/images' ExecutionName (at most 57 of 80).
//
// For reference, the limits of the generated names: IAM role 64
// (API_CreateRole), Lambda function 64 (function name part of its ARN),
// EventBridge rule 64 ([.\-_A-Za-z0-9]+, API_Rule), SQS queue 80
// (CreateQueue), SNS topic 256, CloudWatch alarm 255, log group 512
// ([.\-_/#A-Za-z0-9]); the SNS topic's display name (set here) allows 100.
const (
	maxScheduleGroupName = 64
	maxScheduleName      = 64
	maxDashboardName     = 255
	maxKeyAliasName      = 256
	maxStateMachineName  = 80
)

// hashLen is the number of hex digits of the SHA-256 that replaces the cut
// end of a long name.
const hashLen = 8

// physicalName returns name if it has at most limit characters; otherwise
// its first limit-hashLen-1 characters, "-" and the first hashLen hex
// digits of its SHA-256. The result is stable across synths (a name change
// would replace the resource) and two long names that differ only after
// the cut still differ. Names derived from the configuration are ASCII
// (pkg/config allows letters, digits and '-'), so bytes are characters.
func physicalName(name string, limit int) string {
	if len(name) <= limit {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return name[:limit-hashLen-1] + "-" + hex.EncodeToString(sum[:])[:hashLen]
}

// deploymentName is "amibackup-<deployment>" within limit: the schedule
// group's and the dashboard's name.
func deploymentName(deployment string, limit int) string {
	return physicalName("amibackup-"+deployment, limit)
}

// StateMachineName is the reboot-wave workflow's fixed name,
// "amibackup-<deployment>-waves" within 80 characters: the rollout role's
// Step Functions statements name it before it exists (workflow.go).
func StateMachineName(deployment string) string {
	return physicalName("amibackup-"+deployment+"-waves", maxStateMachineName)
}
