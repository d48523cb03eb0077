package stacks

import (
	"fmt"

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
//
// The reference check (ec2:DescribeImageReferences, resource "*": the
// Service Authorization Reference lists no resource type for it) reads the
// resources it checks with the caller's permissions: the EC2 user guide
// ("Identify your resources referencing specified AMIs", Required IAM
// permissions) and the AWS managed policy AmazonEC2ImageReferencesAccessPolicy
// grant ec2:DescribeInstances, ec2:DescribeLaunchTemplates,
// ec2:DescribeLaunchTemplateVersions, ssm:DescribeParameters and
// ssm:GetParameters (plus imagebuilder:* for recipes, which prune does not
// check) with aws:CalledVia = ec2-images.amazonaws.com. Prune grants the
// same, for its three resource types only, and GetParameters only on this
// account's parameters in the Region. DescribeInstances prune already has
// unconditionally (it lists instances itself).
func pruneStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeInstances", "ec2:DescribeImageReferences"}, []string{"*"}, nil),
		statement("ReferenceCheckReadsViaEC2", []string{"ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions", "ssm:DescribeParameters"},
			[]string{"*"}, calledViaImageReferences),
		statement("ReferenceCheckParametersViaEC2", []string{"ssm:GetParameters"}, []string{ssmParameters(stack)}, calledViaImageReferences),
		statement("DeleteOnlyOurImages", []string{"ec2:DeregisterImage", "ec2:EnableImageDeprecation"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("DeleteOnlyOurSnapshots", []string{"ec2:DeleteSnapshot"}, []string{imageARN(stack, "snapshot/*")}, managedBy(cfg)),
	}
}

// calledViaImageReferences: only when EC2 reads the resources for
// DescribeImageReferences (the principal EC2 uses, per the user guide's
// policy and AmazonEC2ImageReferencesAccessPolicy).
var calledViaImageReferences = map[string]any{"ForAnyValue:StringEquals": map[string]any{"aws:CalledVia": []string{"ec2-images.amazonaws.com"}}}

// ssmParameters: every SSM parameter of the account in the Region (the
// resource type parameter of ssm:GetParameters).
func ssmParameters(stack awscdk.Stack) string {
	return fmt.Sprintf("arn:%s:ssm:%s:%s:parameter/*", *stack.Partition(), *stack.Region(), *stack.Account())
}

func pruneWildcards(stack awscdk.Stack) []Wildcard {
	return []Wildcard{
		{"*", describeReason + " DescribeLaunchTemplates, DescribeLaunchTemplateVersions and ssm:DescribeParameters (no resource types either) only when EC2 reads them for DescribeImageReferences (aws:CalledVia ec2-images.amazonaws.com)."},
		{ssmParameters(stack), "ssm:GetParameters only when EC2 reads parameters for DescribeImageReferences (aws:CalledVia ec2-images.amazonaws.com); which parameters hold AMI IDs is not known in advance."},
		{imageARN(stack, "image/*"), "DeregisterImage and EnableImageDeprecation only on images carrying this deployment's managed-by tag (aws:ResourceTag)."},
		{imageARN(stack, "snapshot/*"), "DeleteSnapshot only on snapshots carrying this deployment's managed-by tag (aws:ResourceTag)."},
	}
}
