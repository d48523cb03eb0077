// Package metrics names the CloudWatch metrics the functions emit (as EMF
// records, pkg/emf) and the stacks alarm on and chart: one contract, so a
// renamed metric cannot leave an alarm watching nothing.
package metrics

// Dimension is the one dimension of every metric; its value is a policy
// name, AllPolicies or config.CopyPolicy.
const Dimension = "Policy"

// AllPolicies is the dimension value under which prune and share report
// every run, so one alarm hears runs of any policy.
const AllPolicies = "all"

// Backup.
const (
	InstancesSelected   = "InstancesSelected"
	ImagesCreated       = "ImagesCreated"
	ImagesExisting      = "ImagesExisting"
	ImagesFailed        = "ImagesFailed"
	InstancesSkipped    = "InstancesSkipped"
	InstancesNotReached = "InstancesNotReached"
	BackupDuration      = "BackupDuration"
)

// Prune.
const (
	ImagesPruned           = "ImagesPruned"
	ImagesKept             = "ImagesKept"
	PruneFailures          = "PruneFailures"
	OrphanSnapshotsDeleted = "OrphanSnapshotsDeleted"
	PruneBlocked           = "PruneBlocked"
	PruneDuration          = "PruneDuration"
)

// Share.
const (
	ImagesShared = "ImagesShared"
	ShareErrors  = "ShareErrors"
)

// Copy.
const (
	CopiesStarted = "CopiesStarted"
	CopiesWaiting = "CopiesWaiting"
	CopyFailures  = "CopyFailures"
)

// Rollout (the reboot-wave workflow): groups halted because a member was
// not healthy within healthTimeout, and instances whose drain could not be
// put back (still in Standby or deregistered when the run ended).
const (
	GroupsHalted         = "GroupsHalted"
	InstancesNotRestored = "InstancesNotRestored"
	RolloutDuration      = "RolloutDuration"
)

// Restore verification (the verify workflow): images that booted with both
// status checks ok, images that did not (or could not be launched), and
// per policy the age in hours of the oldest "newest verified image" over
// the policy's instances (an instance without any counts from its oldest
// image): the alarm fires above verify.maxVerifiedAge.
const (
	ImagesVerified      = "ImagesVerified"
	VerifyFailures      = "VerifyFailures"
	VerifiedAgeHours    = "VerifiedAgeHours"
	VerifyInstancesLeft = "VerifyInstancesLeft"
	VerifyDuration      = "VerifyDuration"
)

// Hand-off to the reboot-wave workflow (backup function): executions
// started (or, for a delivery while it runs, answered again), and
// deliveries of a slot whose execution already exists (closed, or running
// with another input): no second run.
const (
	WorkflowStarted  = "WorkflowExecutionsStarted"
	WorkflowExisting = "WorkflowExecutionsExisting"
)
