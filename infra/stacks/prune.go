package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/metrics"
)

// newPrune adds what both stacks have for prune: the function, its
// schedule (prune.schedule) and the alarms on a blocked or failing run.
func newPrune(c *Common, cfg *config.Config, root string) (*AmiFunction, error) {
	fn, err := NewAmiFunction(c.Stack, &AmiFunctionProps{Name: "prune", Config: cfg, Root: root,
		Statements: pruneStatements(c.Stack, cfg), Wildcards: pruneWildcards(c.Stack), Notifications: c.Notifications})
	if err != nil {
		return nil, err
	}
	c.Schedules.Add("PruneSchedule", "prune", *cfg.Prune.Schedule, fn, SchedulerInput(""))
	// A blocked prune deletes nothing and a failing one leaves images and
	// snapshots behind.
	c.Notifications.AlarmOnAny("PruneBlockedAlarm", "amibackup: the prune blast-radius guard stopped a run; nothing was deleted",
		metric(metrics.PruneBlocked, metrics.AllPolicies, "Maximum", hourly()))
	c.Notifications.AlarmOnAny("PruneFailuresAlarm", "amibackup: prune could not delete some images or snapshots",
		metric(metrics.PruneFailures, metrics.AllPolicies, "Sum", hourly()))
	return fn, nil
}

// pruneStatements: every destructive action requires our managed-by tag on
// the resource. DeregisterImage with DeleteAssociatedSnapshots also needs
// DeleteSnapshot on the snapshots, which carry the same tag.
func pruneStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeInstances"}, []string{"*"}, nil),
		statement("DeleteOnlyOurImages", []string{"ec2:DeregisterImage", "ec2:EnableImageDeprecation"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("DeleteOnlyOurSnapshots", []string{"ec2:DeleteSnapshot"}, []string{imageARN(stack, "snapshot/*")}, managedBy(cfg)),
	}
}

func pruneWildcards(stack awscdk.Stack) []Wildcard {
	return []Wildcard{
		{"*", describeReason},
		{imageARN(stack, "image/*"), "DeregisterImage and EnableImageDeprecation only on images carrying this deployment's managed-by tag (aws:ResourceTag)."},
		{imageARN(stack, "snapshot/*"), "DeleteSnapshot only on snapshots carrying this deployment's managed-by tag (aws:ResourceTag)."},
	}
}
