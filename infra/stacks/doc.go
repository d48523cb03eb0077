// Package stacks defines amibackup's CloudFormation stacks: the functions,
// their schedules, manual-run rules, least-privilege IAM, alarms, dashboard
// and the Recycle Bin safety net.
//
// One file per concern:
//
//   - app.go: the CDK app's configuration and Build (which stack, cdk-nag);
//   - backup_stack.go, recovery_stack.go: BackupStack and RecoveryStack,
//     each on common.go's Common (stack, tags, notifications, schedules);
//   - function.go: AmiFunction, a function with its log group, role,
//     policy, accepted wildcards and errors alarm; bundle.go builds it;
//   - alarms.go (key, topic, dead-letter queue, alarms), dashboard.go,
//     schedules.go (Scheduler schedules and EventBridge rules),
//     recyclebin.go, prune.go (both stacks), sharing.go, guardrails.go;
//   - iam.go (statements, ARNs, accepted wildcards), names.go (physical
//     names within their limits).
//
// The concern types create their resources in the scope they are given,
// with the construct IDs the resources had before the types existed: a
// construct's path is its logical ID, and a changed logical ID replaces the
// resource on deploy (testdata/golden holds the templates that prove it).
package stacks
