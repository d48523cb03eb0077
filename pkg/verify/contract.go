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
